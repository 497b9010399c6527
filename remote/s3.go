package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// DefaultRegion is the region of S3 requests when the AWS configuration
// names none.
const DefaultRegion = "us-east-1"

// s3Source reads an S3 object by ranges.
type s3Source struct {
	url, bucket, key string
	client           *s3.Client
	id               Identity
}

// ParseS3URL splits s3://BUCKET/KEY.
func ParseS3URL(rawurl string) (bucket, key string, err error) {
	scheme, rest := splitScheme(rawurl)
	b, k, _ := strings.Cut(rest, "/")
	if scheme != "s3" || b == "" || k == "" {
		return "", "", &Error{Op: "parse", URL: rawurl, Kind: KindOther, Err: errors.New("want s3://BUCKET/KEY")}
	}
	return b, k, nil
}

// NewS3Client returns an S3 client configured the standard AWS way:
// credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/
// AWS_SESSION_TOKEN, AWS_PROFILE and the shared files, a CA bundle from
// AWS_CA_BUNDLE, the region from
// AWS_REGION or the profile (DefaultRegion when none is set), the endpoint
// from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (or cfg.S3Endpoint). It
// does not retry: callers here retry themselves, resuming partial
// transfers.
func NewS3Client(ctx context.Context, cfg SourceConfig) (*s3.Client, error) {
	conns := cfg.Connections
	if conns <= 0 {
		conns = 64
	}
	// The SDK's own buildable client, so that the configuration can add
	// a CA bundle (AWS_CA_BUNDLE), with the settings of NewHTTPClient.
	bc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConns = 4 * conns
		tr.MaxIdleConnsPerHost = conns
		tr.IdleConnTimeout = 90 * time.Second
		tr.ResponseHeaderTimeout = 30 * time.Second
		tr.DisableCompression = true
		tr.ForceAttemptHTTP2 = true
	})
	ac, err := config.LoadDefaultConfig(ctx,
		config.WithHTTPClient(bc),
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }))
	if err != nil {
		return nil, &Error{Op: "configure", URL: "s3://", Kind: KindOther, Err: err}
	}
	if b, ok := ac.HTTPClient.(*awshttp.BuildableClient); ok {
		ac.HTTPClient = b.Freeze() // an *http.Client whose idle connections can be closed
	}
	if ac.Region == "" {
		ac.Region = DefaultRegion
	}
	return s3.NewFromConfig(ac, func(o *s3.Options) {
		o.DisableLogOutputChecksumValidationSkipped = true
		if cfg.S3Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.S3Endpoint)
		}
		if o.BaseEndpoint != nil && !cfg.S3VirtualHosted {
			o.UsePathStyle = true
		}
	}), nil
}

func openS3(ctx context.Context, rawurl, _ string, cfg SourceConfig) (Source, error) {
	bucket, key, err := ParseS3URL(rawurl)
	if err != nil {
		return nil, err
	}
	client, err := NewS3Client(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s := &s3Source{url: rawurl, bucket: bucket, key: key, client: client}
	// A one-byte GET rather than a HEAD: its error body says which of
	// bucket or key is missing, and why credentials or the region are
	// refused.
	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key, Range: aws.String("bytes=0-0")})
	if err != nil {
		if s3Status(err) == http.StatusRequestedRangeNotSatisfiable { // an empty object
			h, herr := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: &key})
			if herr != nil {
				return nil, s3Error("open", rawurl, herr)
			}
			s.id = Identity{Size: aws.ToInt64(h.ContentLength), ETag: aws.ToString(h.ETag), VersionID: aws.ToString(h.VersionId), LastModified: aws.ToTime(h.LastModified)}
			return s, nil
		}
		return nil, s3Error("open", rawurl, err)
	}
	// Read the byte, so that the connection is kept for the first range
	// request (a fault's) rather than closed.
	io.Copy(io.Discard, io.LimitReader(out.Body, 1<<10))
	out.Body.Close()
	_, _, total, perr := parseContentRange(aws.ToString(out.ContentRange))
	if perr != nil {
		return nil, &Error{Op: "open", URL: rawurl, Kind: KindUnsupported, Err: perr}
	}
	s.id = Identity{Size: total, ETag: aws.ToString(out.ETag), VersionID: aws.ToString(out.VersionId), LastModified: aws.ToTime(out.LastModified)}
	return s, nil
}

func (s *s3Source) URL() string        { return s.url }
func (s *s3Source) Identity() Identity { return s.id }
func (s *s3Source) Close() error {
	if c, ok := s.client.Options().HTTPClient.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	return nil
}

func (s *s3Source) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if err := checkRange(s.url, s.id.Size, off, n); err != nil {
		return nil, err
	}
	in := &s3.GetObjectInput{Bucket: &s.bucket, Key: &s.key, Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1))}
	if s.id.ETag != "" {
		in.IfMatch = aws.String(s.id.ETag)
	}
	if s.id.VersionID != "" {
		in.VersionId = aws.String(s.id.VersionID)
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		e := s3Error("read", s.url, err)
		if e.Kind == KindNotFound { // deleted since it was opened
			e.Kind = KindChanged
		}
		return nil, e
	}
	first, last, total, perr := parseContentRange(aws.ToString(out.ContentRange))
	switch {
	case perr != nil:
		err = &Error{Op: "read", URL: s.url, Kind: KindUnsupported, Err: perr}
	case total != s.id.Size:
		err = &Error{Op: "read", URL: s.url, Kind: KindChanged, Err: fmt.Errorf("size is %d, was %d", total, s.id.Size)}
	case s.id.ETag != "" && aws.ToString(out.ETag) != "" && aws.ToString(out.ETag) != s.id.ETag:
		err = &Error{Op: "read", URL: s.url, Kind: KindChanged, Err: fmt.Errorf("ETag is %s, was %s", aws.ToString(out.ETag), s.id.ETag)}
	case first != off || last != off+n-1:
		err = &Error{Op: "read", URL: s.url, Kind: KindUnsupported, Err: fmt.Errorf("asked for bytes %d-%d, got %d-%d", off, off+n-1, first, last)}
	}
	if err != nil {
		out.Body.Close()
		return nil, err
	}
	return &bodyReader{rc: out.Body, url: s.url, left: n}, nil
}

func s3Status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// s3Error classifies an S3 failure by its error code, or its status when
// the response had no body (HEAD).
func s3Error(op, url string, err error) *Error {
	e := &Error{Op: op, URL: url, Kind: KindTransient, Err: err}
	var re *awshttp.ResponseError
	if !errors.As(err, &re) {
		e.Kind = netKind(err)
		if strings.Contains(err.Error(), "retrieve credentials") {
			e.Kind = KindDenied
		}
		return e
	}
	e.Status = re.HTTPStatusCode()
	if e.Status == 0 { // no response: the request failed on the way
		e.Kind = netKind(err)
		return e
	}
	e.Kind = statusKind(e.Status)
	var ae smithy.APIError
	code, msg := "", ""
	if errors.As(err, &ae) {
		code, msg = ae.ErrorCode(), ae.ErrorMessage()
	}
	region := ""
	if re.Response != nil {
		region = re.Response.Header.Get("X-Amz-Bucket-Region")
	}
	switch code {
	case "NoSuchBucket":
		e.Kind, msg = KindNotFound, "no such bucket"
	case "NoSuchKey", "NotFound":
		e.Kind, msg = KindNotFound, "no such key"
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "Forbidden":
		e.Kind = KindDenied
	case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "InvalidRegion":
		e.Kind = KindWrongRegion
	case "PreconditionFailed":
		e.Kind = KindChanged
	case "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout":
		e.Kind = KindTransient
	}
	if e.Kind == KindOther && e.Status == http.StatusBadRequest && region != "" {
		e.Kind = KindWrongRegion
	}
	if code != "" {
		desc := code
		if msg != "" {
			desc += ": " + msg
		}
		if e.Kind == KindWrongRegion && region != "" {
			desc += " (the bucket is in " + region + "; set AWS_REGION)"
		}
		e.Err = errors.New(desc)
	} else if e.Kind == KindWrongRegion && region != "" {
		e.Err = fmt.Errorf("the bucket is in %s; set AWS_REGION", region)
	}
	return e
}

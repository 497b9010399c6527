package miniotest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// CreateBucket creates a bucket through c, waiting up to a minute for a
// server just started to finish initializing.
func CreateBucket(ctx context.Context, c *s3.Client, name string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
		if err == nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "XMinioServerNotInitialized") {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Bucket creates bucket name on the server (waiting for it to finish
// initializing) through a client of its own, failing tb if it cannot.
func (s *Server) Bucket(tb testing.TB, name string) {
	tb.Helper()
	c := s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint()),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
	})
	if err := CreateBucket(context.Background(), c, name); err != nil {
		tb.Fatalf("miniotest: create bucket %s: %v", name, err)
	}
}

package miniotest

import (
	"context"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
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

package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// checkProfile fails when a profile is named (in the URL, or by
// AWS_PROFILE) and the environment has no keys, but the shared
// credentials file cannot give that profile's: the credential chain would
// go on without it and send every request unsigned, which a store then
// refuses without a word about the profile. Only credentials without an
// access key need it.
func checkProfile(profile string, file *credentials.FileAWSCredentials) error {
	from := namedProfile(profile)
	if from == "" {
		return nil
	}
	if env, _ := (&credentials.EnvAWS{}).RetrieveWithCredContext(nil); env.AccessKeyID != "" || env.SecretAccessKey != "" {
		return nil
	}
	v, err := file.RetrieveWithCredContext(nil)
	if err == nil && v.AccessKeyID == "" {
		err = errNoKeyID
	}
	if err != nil {
		return fmt.Errorf("credentials of %s (from %s): %w", from, sharedCredentialsFile(), fileError(err))
	}
	return nil
}

// errNoKeyID is a profile in the shared credentials file without an
// access key.
var errNoKeyID = errors.New("no aws_access_key_id")

// fileError is err of reading a profile from the shared credentials file
// if it is one known to say nothing of the file's content: a parse error
// quotes the line, which may hold a secret.
func fileError(err error) error {
	msg := err.Error()
	if errors.Is(err, errNoKeyID) || errors.As(err, new(*fs.PathError)) || strings.HasPrefix(msg, "section ") || strings.HasPrefix(msg, "profile ") {
		return err
	}
	return errors.New("the file does not parse")
}

// namedProfile says which profile the URL (profile=P) or AWS_PROFILE
// names, as "profile=P" or "AWS_PROFILE=P"; "" if neither does.
func namedProfile(profile string) string {
	if profile != "" {
		return "profile=" + profile
	}
	if p := os.Getenv("AWS_PROFILE"); p != "" {
		return "AWS_PROFILE=" + p
	}
	return ""
}

func sharedCredentialsFile() string {
	if f := os.Getenv("AWS_SHARED_CREDENTIALS_FILE"); f != "" {
		return f
	}
	return "~/.aws/credentials"
}

// credsFrom says where the credentials a bucket's requests are signed
// with come from, as the credential chain of openS3 finds them, or, for
// anonymous requests, why there are none: never the keys themselves.
func credsFrom(profile string, anonymous bool) string {
	setEnv := func(names ...string) string {
		for _, n := range names {
			if os.Getenv(n) != "" {
				return n
			}
		}
		return ""
	}
	// The environment wins whenever it has either key.
	id, secret := setEnv("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY"), setEnv("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY")
	switch {
	case id != "" && secret != "":
		return fmt.Sprintf("%s and %s (from the environment)", id, secret)
	case id != "":
		return id + " is set but AWS_SECRET_ACCESS_KEY is not"
	case secret != "":
		return secret + " is set but AWS_ACCESS_KEY_ID is not"
	}
	from := namedProfile(profile)
	if from == "" {
		from = "the default profile"
	}
	if anonymous {
		return fmt.Sprintf("none in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or in %s of %s", from, sharedCredentialsFile())
	}
	return fmt.Sprintf("%s (from %s)", from, sharedCredentialsFile())
}

// refusedCredentials are the codes a store answers a request with whose
// credentials it does not take, as opposed to a permission they lack
// (AccessDenied).
var refusedCredentials = map[string]bool{
	"InvalidAccessKeyId": true, "SignatureDoesNotMatch": true,
	"InvalidToken": true, "ExpiredToken": true, "TokenRefreshRequired": true,
}

// denied says what the store's answer to a request it refused (403) does
// not: that the request went without credentials, and why, or that the
// store refused the credentials it was signed with, and where they came
// from.
func (s *S3) denied(err error) error {
	r := minio.ToErrorResponse(err)
	switch {
	case r.StatusCode != http.StatusForbidden:
		return err
	case s.anonymous:
		return permissionError{fmt.Errorf("%w (sent without credentials: %s)", err, s.creds)}
	case refusedCredentials[r.Code]:
		return fmt.Errorf("the store refused the credentials of %s: %w", s.creds, err)
	}
	return permissionError{err}
}

// permissionError is a request the store refused for lack of
// permission: fs.ErrPermission, as a file the user may not read, with
// the store's own words.
type permissionError struct{ error }

func (e permissionError) Is(target error) bool { return target == fs.ErrPermission }
func (e permissionError) Unwrap() error        { return e.error }

// headError is err of a HEAD, which the store refuses (403) with no body
// to say why: a signed one is asked again as a GET (a listing of one
// key), whose answer does say, and that answer replaces "Access Denied."
// when the store refused the credentials themselves.
func (s *S3) headError(err error) error {
	if s.anonymous || minio.ToErrorResponse(err).StatusCode != http.StatusForbidden {
		return err
	}
	_, gerr := s.core.ListObjectsV2(s.cfg.Bucket, "", "", "", "", 1)
	if r := minio.ToErrorResponse(gerr); r.StatusCode == http.StatusForbidden && refusedCredentials[r.Code] {
		return gerr
	}
	return err
}

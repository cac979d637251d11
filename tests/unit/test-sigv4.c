/* SigV4 verification (src/api/sigv4.c) against signatures made by others:
 * AWS's published "get-vanilla" test vector, the boto3 request of the wire
 * reference (section 3.4) and a presigned URL from botocore's
 * SigV4QueryAuth (the expected values were computed once with botocore
 * 1.43.11 and are hard-coded here).  Then every way a request can be
 * refused. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "api/sigv4.h"
#include "common/error.h"
#include "common/hash.h"
#include "tap.h"

#define AKID "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

struct creds {
    const char *secret;
    int calls;
};

static int lookup(const char *akid, char *secret_out, size_t size, char *account_out, void *ud)
{
    struct creds *c = ud;

    c->calls++;
    if (strcmp(akid, AKID) != 0)
        return -ENOENT;
    snprintf(secret_out, size, "%s", c->secret);
    snprintf(account_out, SIGV4_ACCOUNT_SIZE, "%s", "123456789012");
    return 0;
}

/* 2015-08-30T12:36:00Z and 2026-11-27T05:12:14Z */
#define T_2015 ((time_t)1440938160)
#define T_2026 ((time_t)1795756334)

static int verify(const struct sigv4_request *req, const char *secret, struct sigv4_result *res)
{
    struct creds c = { secret, 0 };

    error_clear();
    return sigv4_verify(req, lookup, &c, res);
}

static const char body1[] =
    "Action=DescribeImages&Version=2016-11-15&Owner.1=self&Owner.2=amazon&Owner.3=123456789012"
    "&ExecutableBy.1=self&Filter.1.Name=name&Filter.1.Value.1=my-%2A&Filter.1.Value.2=web+server"
    "%3F&Filter.2.Name=tag%3AEnv&Filter.2.Value.1=prod&Filter.3.Name=state&Filter.3.Value.1="
    "available&IncludeDeprecated=true&IncludeDisabled=false";

#define AUTH1                                                                                  \
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/ec2/aws4_request, "            \
    "SignedHeaders=content-type;host;x-amz-date, "                                             \
    "Signature=d0e1fe372da8987a02a00e0923ea4217d8df6f492c51c2230d7ce96edc3bf293"

static void test_vanilla(void)
{
    struct sigv4_header h[] = {
        { "Host", "example.amazonaws.com" },
        { "X-Amz-Date", "20150830T123600Z" },
        { "Authorization",
          "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
          "SignedHeaders=host;x-amz-date, "
          "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31" },
    };
    struct sigv4_request req = { "GET", "/", "", h, 3, NULL, 0, T_2015 };
    struct sigv4_result res;
    char sig[65];

    is_int(verify(&req, SECRET, &res), 0, "AWS get-vanilla test vector verifies");
    is_str(res.region, "us-east-1", "region from the scope");
    is_str(res.service, "service", "service from the scope");
    is_str(res.account, "123456789012", "account from the lookup");
    is_str(res.access_key_id, AKID, "access key id");
    ok(!res.query_auth, "header form");
    is_int(sigv4_sign(&req, SECRET, "20150830T123600Z", "us-east-1", "service", "host;x-amz-date",
                      false, sig), 0, "sign");
    is_str(sig, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
           "sigv4_sign reproduces the published signature");
}

static void test_boto3_post(void)
{
    struct sigv4_header h[] = {
        { "Host", "127.0.0.1:18080" },
        { "Accept-Encoding", "identity" },
        { "Content-Type", "application/x-www-form-urlencoded; charset=utf-8" },
        { "User-Agent", "Boto3/1.43.11" },
        { "X-Amz-Date", "20261127T051214Z" },
        { "Authorization", AUTH1 },
        { "amz-sdk-request", "attempt=1" },
    };
    struct sigv4_request req = { "POST", "/", "", h, 7, body1, strlen(body1), T_2026 + 30 };
    struct sigv4_result res;
    char *creq = NULL;
    char tampered_body[sizeof(body1)];
    int r;

    is_int(strlen(body1), 321, "the reference's body is 321 bytes");
    is_int(sigv4_canonical_request(&req, "content-type;host;x-amz-date", false, &creq), 0,
           "canonical request");
    is_str(creq,
           "POST\n/\n\ncontent-type:application/x-www-form-urlencoded; charset=utf-8\n"
           "host:127.0.0.1:18080\nx-amz-date:20261127T051214Z\n\ncontent-type;host;x-amz-date\n"
           "1bba03d3a0bdd0ae88af6ba9aaf4fa4b9940e27204ce65940ff21875b2ac7369",
           "canonical request equals the one in the wire reference");
    free(creq);
    is_int(verify(&req, SECRET, &res), 0, "boto3's DescribeImages request verifies");
    is_str(res.service, "ec2", "service ec2");

    r = verify(&req, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEz", &res);
    is_int(r, -EACCES, "wrong secret refused");
    ok(error_message() && strstr(error_message(), "signature mismatch"), "says: %s",
       error_message());

    memcpy(tampered_body, body1, sizeof(body1));
    tampered_body[10] ^= 1;
    req.body = tampered_body;
    is_int(verify(&req, SECRET, &res), -EACCES, "tampered body refused");
    req.body = body1;
    req.body_len--;
    is_int(verify(&req, SECRET, &res), -EACCES, "truncated body refused");
    req.body_len++;

    h[2].value = "application/x-www-form-urlencoded";
    is_int(verify(&req, SECRET, &res), -EACCES, "tampered signed header refused");
    h[2].value = "application/x-www-form-urlencoded;charset=utf-8";
    is_int(verify(&req, SECRET, &res), -EACCES, "removing inner whitespace changes the value");
    h[2].value = "  application/x-www-form-urlencoded;  charset=utf-8 ";
    is_int(verify(&req, SECRET, &res), 0, "header value trimmed and runs collapsed");
    h[2].value = "application/x-www-form-urlencoded; charset=utf-8";

    h[3].value = "curl/8";
    is_int(verify(&req, SECRET, &res), 0, "unsigned header may change");
    h[0].value = "127.0.0.1:18081";
    is_int(verify(&req, SECRET, &res), -EACCES, "another Host (port) refused");
    h[0].value = "127.0.0.1:18080";

    h[2].name = "X-Content-Type";
    r = verify(&req, SECRET, &res);
    is_int(r, -EACCES, "missing signed header refused");
    ok(error_message() && strstr(error_message(), "'content-type' is not in the request"),
       "says: %s", error_message());
    h[2].name = "Content-Type";

    req.now = T_2026 + 301;
    r = verify(&req, SECRET, &res);
    is_int(r, -EACCES, "request 301 s old refused");
    ok(error_message() && strstr(error_message(), "behind"), "says: %s", error_message());
    req.now = T_2026 - 301;
    is_int(verify(&req, SECRET, &res), -EACCES, "request 301 s in the future refused");
    req.now = T_2026 - 299;
    is_int(verify(&req, SECRET, &res), 0, "299 s of skew accepted");
    req.now = T_2026;

    /* Unknown key: refused before any secret is used. */
    h[5].value = "AWS4-HMAC-SHA256 Credential=AKIDOTHER/20261127/us-east-1/ec2/aws4_request, "
                 "SignedHeaders=content-type;host;x-amz-date, "
                 "Signature=d0e1fe372da8987a02a00e0923ea4217d8df6f492c51c2230d7ce96edc3bf293";
    r = verify(&req, SECRET, &res);
    is_int(r, -EACCES, "unknown access key refused");
    ok(error_message() && strstr(error_message(), "unknown access key"), "says: %s",
       error_message());

    h[5].value = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261126/us-east-1/ec2/aws4_request, "
                 "SignedHeaders=content-type;host;x-amz-date, "
                 "Signature=d0e1fe372da8987a02a00e0923ea4217d8df6f492c51c2230d7ce96edc3bf293";
    r = verify(&req, SECRET, &res);
    is_int(r, -EACCES, "scope date differing from X-Amz-Date refused");
    ok(error_message() && strstr(error_message(), "scope date"), "says: %s", error_message());

    h[5].value = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/ec2/aws4_request, "
                 "SignedHeaders=content-type;x-amz-date, "
                 "Signature=d0e1fe372da8987a02a00e0923ea4217d8df6f492c51c2230d7ce96edc3bf293";
    r = verify(&req, SECRET, &res);
    is_int(r, -EACCES, "unsigned Host refused");
    ok(error_message() && strstr(error_message(), "host is not a signed header"), "says: %s",
       error_message());

    h[5].value = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/ec2/aws4_request, "
                 "SignedHeaders=content-type;host, "
                 "Signature=d0e1fe372da8987a02a00e0923ea4217d8df6f492c51c2230d7ce96edc3bf293";
    is_int(verify(&req, SECRET, &res), -EACCES, "unsigned X-Amz-Date refused");

    h[5].value = AUTH1;
    h[4].name = "X-Amz-Nope";
    is_int(verify(&req, SECRET, &res), -EACCES, "no X-Amz-Date refused");
    h[4].name = "X-Amz-Date";
    h[4].value = "20261127T051214";
    is_int(verify(&req, SECRET, &res), -EACCES, "malformed X-Amz-Date refused");
    h[4].value = "20261127T051214Z";

    h[5].name = "X-Authorization";
    r = verify(&req, SECRET, &res);
    is_int(r, -EACCES, "unsigned request refused");
    h[5].name = "Authorization";
    is_int(verify(&req, SECRET, &res), 0, "restored request verifies again");
}

#define PRESIGNED                                                                              \
    "Action=DescribeRegions&Version=2016-11-15&RegionName.1=us%20west&X-Amz-Algorithm=AWS4-"   \
    "HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-west-2%2Fec2%2Faws4_request&X-"  \
    "Amz-Date=20150830T123600Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature="    \
    "e987829e99df567121e77d0431774bed4e38cb98652c948103400a927a6b4270"

static void test_query_auth(void)
{
    struct sigv4_header h[] = { { "Host", "127.0.0.1:8773" }, { "Accept", "*/*" } };
    struct sigv4_request req = { "GET", "/", PRESIGNED, h, 2, NULL, 0, T_2015 + 10 };
    struct sigv4_result res;
    char q[sizeof(PRESIGNED) + 64];
    int r;

    is_int(verify(&req, SECRET, &res), 0, "botocore presigned URL verifies");
    ok(res.query_auth, "query form");
    is_str(res.region, "us-west-2", "region from X-Amz-Credential");
    req.now = T_2015 + 300;
    is_int(verify(&req, SECRET, &res), 0, "valid until X-Amz-Expires");
    req.now = T_2015 + 301;
    r = verify(&req, SECRET, &res);
    is_int(r, -EACCES, "expired presigned URL refused");
    ok(error_message() && strstr(error_message(), "expired"), "says: %s", error_message());
    req.now = T_2015 - 400;
    is_int(verify(&req, SECRET, &res), -EACCES, "presigned URL from the future refused");
    req.now = T_2015;

    is_int(verify(&req, "other", &res), -EACCES, "wrong secret refused");
    snprintf(q, sizeof(q), "%s", PRESIGNED);
    memcpy(strstr(q, "us%20west"), "us%20east", 9);
    is_int(verify(&req, SECRET, &res), 0, "(control)");
    req.query = q;
    is_int(verify(&req, SECRET, &res), -EACCES, "tampered parameter refused");
    snprintf(q, sizeof(q), "%s&Extra=1", PRESIGNED);
    is_int(verify(&req, SECRET, &res), -EACCES, "added parameter refused");
    snprintf(q, sizeof(q), "%s", PRESIGNED);
    memcpy(strstr(q, "Expires=300"), "Expires=900", 11);
    is_int(verify(&req, SECRET, &res), -EACCES, "extended expiry refused");
    /* Parameter order does not matter: the canonical query is sorted. */
    snprintf(q, sizeof(q), "Version=2016-11-15&Action=DescribeRegions&%s",
             strstr(PRESIGNED, "RegionName.1"));
    req.query = q;
    is_int(verify(&req, SECRET, &res), 0, "parameter order does not matter");
    req.query = PRESIGNED;
    struct sigv4_header both[] = { { "Host", "127.0.0.1:8773" }, { "Authorization", AUTH1 } };
    req.headers = both;
    is_int(verify(&req, SECRET, &res), -EACCES, "header and query auth together refused");
    req.headers = h;
    h[0].value = "localhost:8773";
    is_int(verify(&req, SECRET, &res), -EACCES, "presigned for another Host refused");
}

static void test_parse(void)
{
    struct sigv4_auth a;

    is_int(sigv4_parse_authorization(AUTH1, &a), 0, "parse the boto3 header");
    is_str(a.access_key_id, AKID, "akid");
    is_str(a.date, "20261127", "date");
    is_str(a.region, "us-east-1", "region");
    is_str(a.service, "ec2", "service");
    is_str(a.signed_headers, "content-type;host;x-amz-date", "signed headers");
    is_int(sigv4_parse_authorization("AWS4-HMAC-SHA1 Credential=a/b", &a), -EACCES,
           "other algorithm refused");
    is_int(sigv4_parse_authorization(
               "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/ec2/aws4_request, "
               "SignedHeaders=host;content-type, Signature=" "d0e1fe372da8987a02a00e0923ea4217"
               "d8df6f492c51c2230d7ce96edc3bf293", &a),
           -EACCES, "unsorted signed headers refused");
    is_int(sigv4_parse_authorization(
               "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/ec2/aws4_request, "
               "SignedHeaders=host, Signature=D0E1FE372DA8987A02A00E0923EA4217"
               "D8DF6F492C51C2230D7CE96EDC3BF293", &a),
           -EACCES, "uppercase signature refused");
    is_int(sigv4_parse_authorization(
               "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/ec2/aws4_request, "
               "SignedHeaders=host, SignedHeaders=host, Signature=d0e1fe372da8987a02a00e0923e"
               "a4217d8df6f492c51c2230d7ce96edc3bf293", &a),
           -EACCES, "repeated component refused");
    is_int(sigv4_parse_authorization(
               "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/ec2/aws4_reques, "
               "SignedHeaders=host, Signature=d0e1fe372da8987a02a00e0923e"
               "a4217d8df6f492c51c2230d7ce96edc3bf293", &a),
           -EACCES, "bad scope terminator refused");
    is_int(sigv4_parse_authorization(
               "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2026112/us-east-1/ec2/aws4_request, "
               "SignedHeaders=host, Signature=d0e1fe372da8987a02a00e0923e"
               "a4217d8df6f492c51c2230d7ce96edc3bf293", &a),
           -EACCES, "short scope date refused");
    is_int(sigv4_parse_authorization("AWS4-HMAC-SHA256 Credential=x", &a), -EACCES,
           "missing components refused");
}

/* X-Amz-Content-SHA256 stands for the body in the signature: UNSIGNED-PAYLOAD
 * (the EBS direct API's PutSnapshotBlock) is reported to the caller, who
 * decides where it is acceptable; any other value must be the body's hash,
 * or a signed request could carry any body. */
static void test_content_sha256(void)
{
    static const char body[] = "the bytes of a block";
    static const char sh[] = "host;x-amz-checksum;x-amz-content-sha256;x-amz-date";
    char auth[400], sig[65], hash[DIGEST_HEX_SIZE], other[sizeof(body)];
    struct digest d;
    struct sigv4_header h[] = {
        { "Host", "127.0.0.1:18081" },
        { "X-Amz-Date", "20261127T051214Z" },
        { "X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD" },
        { "x-amz-checksum", "M7yKq0BwNnjD6+lNLdjyr/8oXdkB+SNOhB5GefggT9U=" },
        { "Authorization", auth },
    };
    struct sigv4_request req = { "PUT", "/snapshots/snap-0123456789abcdef0/blocks/3", "", h, 5,
                                 body, strlen(body), T_2026 };
    struct sigv4_result res;

    is_int(sigv4_sign(&req, SECRET, "20261127T051214Z", "us-east-1", "ebs", sh, false, sig), 0,
           "sign a PutSnapshotBlock with UNSIGNED-PAYLOAD");
    snprintf(auth, sizeof(auth),
             "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/ebs/aws4_request, "
             "SignedHeaders=%s, Signature=%s", sh, sig);
    is_int(verify(&req, SECRET, &res), 0, "it verifies");
    ok(res.unsigned_payload, "reported as an unsigned payload");
    ok(res.checksum_signed, "with x-amz-checksum signed");
    is_str(res.service, "ebs", "for service ebs");
    memcpy(other, body, sizeof(body));
    other[0] ^= 1;
    req.body = other;
    is_int(verify(&req, SECRET, &res), 0, "any body verifies: it is not signed");
    req.body = body;

    sha256(body, strlen(body), &d);
    h[2].value = digest_to_hex(&d, hash);
    is_int(sigv4_sign(&req, SECRET, "20261127T051214Z", "us-east-1", "ebs", sh, false, sig), 0,
           "sign again with the body's hash");
    snprintf(auth, sizeof(auth),
             "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/ebs/aws4_request, "
             "SignedHeaders=%s, Signature=%s", sh, sig);
    is_int(verify(&req, SECRET, &res), 0, "it verifies");
    ok(!res.unsigned_payload, "the payload is signed");
    req.body = other;
    is_int(verify(&req, SECRET, &res), -EACCES,
           "another body under the same X-Amz-Content-SHA256 is refused");
    ok(error_message() && strstr(error_message(), "does not match the body"), "says: %s",
       error_message());
    req.body = body;
}

int main(void)
{
    test_vanilla();
    test_boto3_post();
    test_query_auth();
    test_parse();
    test_content_sha256();
    return done_testing();
}

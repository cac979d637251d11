/* The instance metadata service (src/imds): request parsing, every path of
 * the tree, the IMDSv2 token flow, TTL expiry, required mode, the instance
 * file, and the per-connection server over a socketpair. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "imds/imds.h"
#include "tap.h"

static uint8_t key[IMDS_KEY_SIZE] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };

static void instance_init(struct imds_instance *in)
{
    memset(in, 0, sizeof(*in));
    in->instance_id = xstrdup("i-0123456789abcdef0");
    in->image_id = xstrdup("ami-0aaaabbbbccccdddd");
    in->instance_type = xstrdup("t3.micro");
    in->availability_zone = xstrdup("eu-west-1a");
    in->region = xstrdup("eu-west-1");
    in->account_id = xstrdup("123456789012");
    in->private_ip = xstrdup("169.254.0.15");
    in->mac = xstrdup("52:54:00:12:34:56");
    in->reservation_id = xstrdup("r-0123456789abcdef0");
    in->launch_time = xstrdup("2026-11-27T11:00:00Z");
    in->key_name = xstrdup("my-key");
    in->public_key = xstrdup("ssh-ed25519 AAAAC3Nza my-key");
    in->security_groups = xstrdup("default\nweb");
    in->security_group_ids = xstrdup("sg-01\nsg-02");
    in->user_data = (uint8_t *)xstrdup("#!/bin/sh\necho hi\n");
    in->user_data_len = strlen((char *)in->user_data);
}

/* One request through parse and respond: status, body (malloc'd). */
static int ask(const struct imds_instance *in, time_t now, const char *req, char **ret_body,
               char **ret_head)
{
    struct imds_request rq;
    size_t used;
    int r = imds_request_parse(req, strlen(req), &rq, &used);
    if (r < 0)
        return r;
    char *resp;
    size_t len;
    r = imds_respond(in, key, now, &rq, &resp, &len);
    if (r < 0)
        return r;
    int status = atoi(resp + 9);
    char *sep = strstr(resp, "\r\n\r\n");
    if (ret_body)
        *ret_body = xstrdup(sep + 4);
    if (ret_head)
        *ret_head = strndup(resp, (size_t)(sep - resp));
    free(resp);
    return status;
}

static int get(const struct imds_instance *in, const char *path, char **ret_body)
{
    char req[1200];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", path);
    return ask(in, 1000, req, ret_body, NULL);
}

static void check_get(const struct imds_instance *in, const char *path, const char *want)
{
    char *body = NULL;
    int st = get(in, path, &body);
    is_int(st, 200, "GET %s: 200", path);
    is_str(body ? body : "", want, "GET %s: body", path);
    free(body);
}

static void test_paths(void)
{
    struct imds_instance in;
    instance_init(&in);
    char *body = NULL;
    int st = get(&in, "/", &body);
    is_int(st, 200, "GET /");
    ok(body && strstr(body, "2009-04-04\n") && strstr(body, "\nlatest"), "versions listed");
    free(body);
    check_get(&in, "/latest/", "dynamic\nmeta-data\nuser-data");
    check_get(&in, "/latest/meta-data/",
              "ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\n"
              "instance-action\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\n"
              "network/\nplacement/\npublic-keys/\nreservation-id\nsecurity-groups\nservices/");
    check_get(&in, "/latest/meta-data/ami-id", "ami-0aaaabbbbccccdddd");
    check_get(&in, "/latest/meta-data/ami-launch-index", "0");
    check_get(&in, "/latest/meta-data/ami-manifest-path", "(unknown)");
    check_get(&in, "/latest/meta-data/block-device-mapping/", "ami\nroot");
    check_get(&in, "/latest/meta-data/block-device-mapping/ami", "/dev/xvda");
    check_get(&in, "/latest/meta-data/block-device-mapping/root", "/dev/xvda");
    check_get(&in, "/latest/meta-data/hostname", "ip-169-254-0-15.eu-west-1.compute.internal");
    check_get(&in, "/latest/meta-data/local-hostname",
              "ip-169-254-0-15.eu-west-1.compute.internal");
    check_get(&in, "/latest/meta-data/instance-action", "none");
    check_get(&in, "/latest/meta-data/instance-id", "i-0123456789abcdef0");
    check_get(&in, "/2009-04-04/meta-data/instance-id", "i-0123456789abcdef0");
    check_get(&in, "/latest/meta-data/instance-type", "t3.micro");
    check_get(&in, "/latest/meta-data/local-ipv4", "169.254.0.15");
    check_get(&in, "/latest/meta-data/mac", "52:54:00:12:34:56");
    check_get(&in, "/latest/meta-data/network/", "interfaces/");
    check_get(&in, "/latest/meta-data/network/interfaces/", "macs/");
    check_get(&in, "/latest/meta-data/network/interfaces/macs/", "52:54:00:12:34:56/");
    check_get(&in, "/latest/meta-data/network/interfaces/macs/52:54:00:12:34:56/",
              "device-number\nlocal-hostname\nlocal-ipv4s\nmac\nowner-id\nsecurity-group-ids\n"
              "security-groups");
    check_get(&in, "/latest/meta-data/network/interfaces/macs/52:54:00:12:34:56/owner-id",
              "123456789012");
    check_get(&in,
              "/latest/meta-data/network/interfaces/macs/52:54:00:12:34:56/security-group-ids",
              "sg-01\nsg-02");
    check_get(&in, "/latest/meta-data/placement/", "availability-zone\nregion");
    check_get(&in, "/latest/meta-data/placement/availability-zone", "eu-west-1a");
    check_get(&in, "/latest/meta-data/placement/region", "eu-west-1");
    check_get(&in, "/latest/meta-data/public-keys/", "0=my-key");
    check_get(&in, "/latest/meta-data/public-keys/0/", "openssh-key");
    check_get(&in, "/latest/meta-data/public-keys/0/openssh-key", "ssh-ed25519 AAAAC3Nza my-key");
    check_get(&in, "/latest/meta-data/reservation-id", "r-0123456789abcdef0");
    check_get(&in, "/latest/meta-data/security-groups", "default\nweb");
    check_get(&in, "/latest/meta-data/services/", "domain\npartition");
    check_get(&in, "/latest/meta-data/services/domain", "amazonaws.com");
    check_get(&in, "/latest/meta-data/placement", "availability-zone\nregion");
    check_get(&in, "/latest/user-data", "#!/bin/sh\necho hi\n");
    check_get(&in, "/latest/dynamic/", "instance-identity/");
    check_get(&in, "/latest/dynamic/instance-identity/", "document");
    st = get(&in, "/latest/dynamic/instance-identity/document", &body);
    is_int(st, 200, "identity document");
    ok(body && strstr(body, "\"instanceId\" : \"i-0123456789abcdef0\"") &&
           strstr(body, "\"region\" : \"eu-west-1\"") &&
           strstr(body, "\"pendingTime\" : \"2026-11-27T11:00:00Z\""),
       "identity document fields");
    free(body);
    static const char *const missing[] = {
        "/latest/meta-data/nothing", "/latest/meta-data/ami-id/x", "/latest//meta-data",
        "/latest/meta-data//ami-id", "/1999-01-01/meta-data/", "/latestx/", "/latest/other",
        "/latest/meta-data/public-keys/1/", "/latest/meta-data/public-keys/0/openssh-key/x",
    };
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        st = get(&in, missing[i], NULL);
        is_int(st, 404, "GET %s: 404", missing[i]);
    }
    /* no key, no user data, us-east-1 hostname */
    free(in.key_name);
    free(in.public_key);
    free(in.user_data);
    free(in.region);
    in.key_name = in.public_key = NULL;
    in.user_data = NULL;
    in.user_data_len = 0;
    in.region = xstrdup("us-east-1");
    is_int(get(&in, "/latest/user-data", NULL), 404, "no user data: 404");
    is_int(get(&in, "/latest/meta-data/public-keys/", NULL), 404, "no key: 404");
    check_get(&in, "/latest/", "dynamic\nmeta-data");
    check_get(&in, "/latest/meta-data/hostname", "ip-169-254-0-15.ec2.internal");
    st = get(&in, "/latest/meta-data/", &body);
    ok(body && !strstr(body, "public-keys"), "no key: not listed");
    free(body);
    /* HEAD: headers only */
    char *head = NULL;
    st = ask(&in, 1000, "HEAD /latest/meta-data/ami-id HTTP/1.1\r\n\r\n", &body, &head);
    is_int(st, 200, "HEAD 200");
    is_str(body, "", "HEAD: no body");
    ok(head && strstr(head, "Content-Length: 21\r\n"), "HEAD: the length of the body");
    free(body);
    free(head);
    is_int(ask(&in, 1000, "POST /latest/meta-data/ HTTP/1.1\r\n\r\n", NULL, NULL), 405,
           "POST: 405");
    is_int(ask(&in, 1000, "PUT /latest/meta-data/ HTTP/1.1\r\n\r\n", NULL, NULL), 405,
           "PUT elsewhere: 405");
    is_int(ask(&in, 1000, "GET /latest/api/token HTTP/1.1\r\n\r\n", NULL, NULL), 405,
           "GET of the token: 405");
    imds_instance_release(&in);
}

static void test_tokens(void)
{
    struct imds_instance in;
    instance_init(&in);
    char *body = NULL, *head = NULL;

    static const char *const bad_ttls[] = { "0", "21601", "-1", "abc", "", "1e3", "99999999" };
    for (size_t i = 0; i < sizeof(bad_ttls) / sizeof(bad_ttls[0]); i++) {
        char req[200];
        snprintf(req, sizeof(req),
                 "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: %s\r\n\r\n",
                 bad_ttls[i]);
        is_int(ask(&in, 1000, req, NULL, NULL), 400, "TTL '%s': 400", bad_ttls[i]);
    }
    is_int(ask(&in, 1000, "PUT /latest/api/token HTTP/1.1\r\n\r\n", NULL, NULL), 400,
           "no TTL: 400");
    is_int(ask(&in, 1000,
               "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n"
               "X-Forwarded-For: 1.2.3.4\r\n\r\n",
               NULL, NULL),
           403, "X-Forwarded-For: 403");

    int st = ask(&in, 1000,
                 "PUT /latest/api/token HTTP/1.1\r\nx-AWS-ec2-metadata-token-ttl-seconds:  21600 \r\n"
                 "Content-Length: 0\r\n\r\n",
                 &body, &head);
    is_int(st, 200, "token: 200");
    ok(head && strstr(head, "X-Aws-Ec2-Metadata-Token-Ttl-Seconds: 21600"), "token: TTL header");
    ok(imds_token_verify(key, 1000, body) == 0, "token verifies");
    ok(imds_token_verify(key, 1000 + 21599, body) == 0, "token valid before its TTL");
    is_int(imds_token_verify(key, 1000 + 21600, body), -EACCES, "token expired at its TTL");
    uint8_t other[IMDS_KEY_SIZE] = { 9 };
    is_int(imds_token_verify(other, 1000, body), -EACCES, "another instance's key: refused");
    char forged[128];
    snprintf(forged, sizeof(forged), "%s", body);
    forged[0] = forged[0] == '9' ? '8' : '9'; /* a later expiry, same MAC */
    is_int(imds_token_verify(key, 1000, forged), -EACCES, "altered expiry: refused");
    is_int(imds_token_verify(key, 1000, ""), -EACCES, "empty: refused");
    is_int(imds_token_verify(key, 1000, "99999999999999999999999.00"), -EACCES,
           "overflowing expiry: refused");

    char req[512];
    snprintf(req, sizeof(req),
             "GET /latest/meta-data/instance-id HTTP/1.1\r\nX-aws-ec2-metadata-token: %s\r\n\r\n",
             body);
    char *b2 = NULL;
    is_int(ask(&in, 5000, req, &b2, NULL), 200, "v2 GET: 200");
    is_str(b2, "i-0123456789abcdef0", "v2 GET: body");
    free(b2);
    is_int(ask(&in, 1000 + 21600, req, NULL, NULL), 401, "v2 GET with an expired token: 401");
    is_int(ask(&in, 1000,
               "GET /latest/meta-data/instance-id HTTP/1.1\r\nX-aws-ec2-metadata-token: junk\r\n\r\n",
               NULL, NULL),
           401, "optional mode, invalid token: 401");
    is_int(get(&in, "/latest/meta-data/instance-id", NULL), 200, "optional mode: v1 allowed");

    in.tokens_required = true;
    is_int(get(&in, "/latest/meta-data/instance-id", NULL), 401, "required mode: v1 refused");
    is_int(get(&in, "/", NULL), 401, "required mode: v1 refused at /");
    is_int(ask(&in, 5000, req, NULL, NULL), 200, "required mode: v2 allowed");

    /* a short TTL expires */
    free(body);
    st = ask(&in, 2000,
             "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 1\r\n\r\n",
             &body, NULL);
    is_int(st, 200, "TTL 1: 200");
    is_int(imds_token_verify(key, 2000, body), 0, "TTL 1: valid at once");
    is_int(imds_token_verify(key, 2001, body), -EACCES, "TTL 1: expired a second later");

    in.endpoint_disabled = true;
    is_int(get(&in, "/latest/meta-data/instance-id", NULL), -EACCES, "disabled: no answer");
    free(body);
    free(head);
    imds_instance_release(&in);
}

static void test_parser(void)
{
    struct imds_request rq;
    size_t used;
    const char *two = "GET /a?x=1 HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
    is_int(imds_request_parse(two, strlen(two), &rq, &used), 0, "pipelined: first");
    is_str(rq.path, "/a", "query string dropped");
    ok(rq.close, "Connection: close");
    is_int(imds_request_parse(two + used, strlen(two) - used, &rq, &used), 0, "pipelined: second");
    ok(rq.close, "HTTP/1.0 closes");
    is_int(imds_request_parse("GET / HTTP/1.1\r\n", 16, &rq, &used), -EAGAIN, "incomplete");
    const char *body = "PUT /latest/api/token HTTP/1.1\r\nContent-Length: 5\r\n\r\nab";
    is_int(imds_request_parse(body, strlen(body), &rq, &used), -EAGAIN, "body incomplete");
    static const char *const bad[] = {
        "GET / HTTP/2.0\r\n\r\n",       "GET /\r\n\r\n",
        "get / HTTP/1.1\r\n\r\n",       "GET  HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nNoColon\r\n\r\n", "GET / HTTP/1.1\r\n: v\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        is_int(imds_request_parse(bad[i], strlen(bad[i]), &rq, &used), -EBADMSG, "bad #%zu", i);
    const char *big = "GET / HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n";
    is_int(imds_request_parse(big, strlen(big), &rq, &used), -EMSGSIZE, "body too large");
    char *huge = xmalloc(20000);
    memset(huge, 'a', 20000);
    memcpy(huge, "GET /", 5);
    is_int(imds_request_parse(huge, 20000, &rq, &used), -EMSGSIZE, "head too large");
    free(huge);
}

static void test_instance_file(void)
{
    struct imds_instance in, back;
    instance_init(&in);
    in.tokens_required = true;
    char *text;
    size_t len;
    is_int(imds_instance_format(&in, &text, &len), 0, "format");
    is_int(imds_instance_parse(text, len, &back), 0, "parse");
    is_str(back.instance_id, in.instance_id, "round trip: id");
    is_str(back.security_groups, in.security_groups, "round trip: groups");
    ok(back.user_data_len == in.user_data_len &&
           !memcmp(back.user_data, in.user_data, in.user_data_len),
       "round trip: user data");
    ok(back.tokens_required && !back.endpoint_disabled, "round trip: flags");
    imds_instance_release(&back);
    is_int(imds_instance_parse(text, len - 1, &back), -EBADMSG, "truncated: refused");
    char *dup = xasprintf("%s%s", text, "region 6161\n");
    is_int(imds_instance_parse(dup, strlen(dup), &back), -EBADMSG, "repeated field: refused");
    free(dup);
    char *unk = xasprintf("%s%s", text, "colour 6161\n");
    is_int(imds_instance_parse(unk, strlen(unk), &back), -EBADMSG, "unknown field: refused");
    free(unk);
    const char *nohex = "instance_id zz\n";
    is_int(imds_instance_parse(nohex, strlen(nohex), &back), -EBADMSG, "bad hex: refused");
    free(text);
    free(in.instance_id);
    in.instance_id = NULL;
    is_int(imds_instance_format(&in, &text, &len), -EINVAL, "missing id: refused");
    in.instance_id = xstrdup("i-1\n2");
    is_int(imds_instance_format(&in, &text, &len), -EINVAL, "newline in id: refused");
    imds_instance_release(&in);
}

static void test_serve(void)
{
    char dir[] = "/tmp/test-imds-XXXXXX";
    ok(mkdtemp(dir) != NULL, "temp dir");
    struct imds_instance in;
    instance_init(&in);
    char *netdev = NULL;
    is_int(imds_instance_install(dir, &in, "/usr/bin/kiln", 0, &netdev), 0, "install");
    ok(netdev && strstr(netdev, "net=169.254.0.0/16") && strstr(netdev, "restrict=on") &&
           strstr(netdev, "guestfwd=tcp:169.254.169.254:80-cmd:/usr/bin/kiln imds-serve /tmp/"),
       "netdev options: %s", netdev ? netdev : "");
    char *p = xasprintf("%s/imds.key", dir);
    struct stat st;
    ok(stat(p, &st) == 0 && st.st_size == IMDS_KEY_SIZE && (st.st_mode & 0777) == 0600,
       "key: 32 bytes, 0600");
    free(p);
    char *nd2 = NULL;
    is_int(imds_instance_install(dir, &in, "/usr/bin/ki,ln", 0, &nd2), -EINVAL, "comma refused");
    is_int(imds_instance_install(dir, &in, "kiln", 0, &nd2), -EINVAL, "relative path refused");
    is_int(imds_instance_install(dir, &in, "/k", 2, &nd2), -EINVAL, "unknown flag refused");
    is_int(imds_netdev_options(dir, "/usr/bin/kiln", IMDS_NET_EGRESS, &nd2), 0, "egress");
    ok(strstr(nd2, "restrict=off,guestfwd=tcp:169.254.169.254:80-cmd:"), "egress: restrict=off");
    free(nd2);

    int sp[2];
    ok(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0, "socketpair");
    pid_t pid = fork();
    if (pid == 0) {
        close(sp[0]);
        _exit(imds_serve(dir, sp[1], sp[1]) == 0 ? 0 : 1);
    }
    close(sp[1]);
    const char *req = "PUT /latest/api/token HTTP/1.1\r\n"
                      "X-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n"
                      "GET /latest/meta-data/local-ipv4 HTTP/1.1\r\nConnection: close\r\n\r\n";
    ok(write(sp[0], req, strlen(req)) == (ssize_t)strlen(req), "requests sent");
    char buf[4096];
    size_t have = 0;
    ssize_t n;
    while ((n = read(sp[0], buf + have, sizeof(buf) - 1 - have)) > 0)
        have += (size_t)n;
    buf[have] = '\0';
    close(sp[0]);
    int status;
    waitpid(pid, &status, 0);
    ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "served until close");
    ok(strstr(buf, "HTTP/1.1 200 OK") && strstr(buf, "\r\n\r\n169.254.0.15"),
       "two answers on one connection");

    is_int(imds_instance_uninstall(dir), 0, "uninstall");
    is_int(imds_instance_uninstall(dir), 0, "uninstall again");
    is_int(imds_serve(dir, -1, -1), -ENOENT, "no instance file: refused");
    rmdir(dir);
    free(netdev);
    imds_instance_release(&in);
}

int main(void)
{
    test_paths();
    test_tokens();
    test_parser();
    test_instance_file();
    test_serve();
    return done_testing();
}

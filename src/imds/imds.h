/* src/imds: the instance metadata service (IMDSv1 and IMDSv2) for one
 * instance, as a guest sees it at http://169.254.169.254/.
 *
 * How it is wired (docs/imds.md): the guest's user network (slirp) is
 * 169.254.0.0/16, so 169.254.169.254 lies inside it and a `guestfwd`
 * catches it; every guest connection to 169.254.169.254:80 makes QEMU run
 * `kiln imds-serve DIR` with the connection as its stdin and stdout.  That
 * process reads the instance's metadata (DIR/imds.instance) and key
 * (DIR/imds.key), both written by imds_instance_install(), answers HTTP
 * until the guest closes, and exits.  No daemon thread: nothing to stop
 * but the files.
 *
 * Everything that parses guest or file bytes is pure (fuzzed:
 * tests/fuzz/fuzz-imds.c).  int functions return >= 0 or -errno with a
 * message through error_set().
 */
#ifndef KILN_IMDS_IMDS_H
#define KILN_IMDS_IMDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* What the guest is told.  Strings are NUL-terminated UTF-8 without
 * newlines; NULL (or "" for optional ones) means absent.  The caller owns
 * everything (imds_instance_release() frees what imds_instance_parse()
 * made). */
struct imds_instance {
    char *instance_id;          /* i-...            (required) */
    char *image_id;             /* ami-...          (required) */
    char *instance_type;        /* t3.micro ...     (required) */
    char *availability_zone;    /* us-east-1a       (required) */
    char *region;               /* us-east-1        (required) */
    char *account_id;           /* owner, 12 digits (required) */
    char *private_ip;           /* the guest's IPv4 (required) */
    char *mac;                  /* 52:54:00:..      (required) */
    char *reservation_id;       /* r-...            (required) */
    char *launch_time;          /* 2026-11-27T11:00:00Z (required) */
    char *root_device_name;     /* /dev/xvda; NULL: /dev/xvda */
    char *key_name;             /* NULL: no public-keys/ */
    char *public_key;           /* the OpenSSH line, with key_name */
    char *security_groups;      /* names, one per line; NULL: none */
    char *security_group_ids;   /* sg-... one per line; NULL: none */
    uint8_t *user_data;         /* NULL: /latest/user-data is 404 */
    size_t user_data_len;
    bool tokens_required;       /* HttpTokens=required: IMDSv1 gets 401 */
    bool endpoint_disabled;     /* HttpEndpoint=disabled: connections closed unanswered */
};

void imds_instance_release(struct imds_instance *in);

/* The on-disk form (DIR/imds.instance): one `name hexvalue` line per
 * field, so that no value needs escaping.  _format returns a malloc'd
 * text; _parse refuses unknown names, bad hex, duplicates, a missing
 * required field or over 1 MiB with -EBADMSG. */
int imds_instance_format(const struct imds_instance *in, char **ret_text, size_t *ret_len);
int imds_instance_parse(const char *text, size_t len, struct imds_instance *ret);

#define IMDS_KEY_SIZE 32

/* imds_instance_install() flags */
#define IMDS_NET_EGRESS 1u

/* ---- HTTP (pure) ---- */

enum imds_method {
    IMDS_GET,
    IMDS_HEAD,
    IMDS_PUT,
    IMDS_OTHER,
};

struct imds_request {
    enum imds_method method;
    char path[1024];            /* the target without query string */
    char token[256];            /* X-aws-ec2-metadata-token ("" absent) */
    char ttl[32];               /* X-aws-ec2-metadata-token-ttl-seconds */
    bool has_token, has_ttl, token_too_long, ttl_too_long;
    bool forwarded;             /* an X-Forwarded-For header */
    bool close;                 /* Connection: close, or HTTP/1.0 */
};

/* Parse one request from the start of buf: its length (head plus body,
 * which is skipped) in *ret_used.  -EAGAIN: incomplete, read more;
 * -EBADMSG: not HTTP/1.x; -EMSGSIZE: the head is over 16 KiB, a path over
 * 1023 bytes or a body over 64 KiB. */
int imds_request_parse(const char *buf, size_t len, struct imds_request *ret, size_t *ret_used);

/* The complete HTTP response to `rq` at time `now` (malloc'd, *ret_len
 * bytes).  -EACCES when the endpoint is disabled (answer nothing, close). */
int imds_respond(const struct imds_instance *in, const uint8_t key[IMDS_KEY_SIZE], time_t now,
                 const struct imds_request *rq, char **ret, size_t *ret_len);

/* An IMDSv2 token valid for ttl seconds from now: stateless, the expiry
 * and an HMAC-SHA256 of it under the instance's key.  _verify: 0, or
 * -EACCES when forged, malformed or expired. */
void imds_token_make(const uint8_t key[IMDS_KEY_SIZE], time_t now, unsigned ttl, char ret[96]);
int imds_token_verify(const uint8_t key[IMDS_KEY_SIZE], time_t now, const char *token);

/* ---- the hook for instances ---- */

/* Write DIR/imds.instance and a fresh random DIR/imds.key (0600; each
 * durably: temp file, fsync, rename, directory fsync) and return, in
 * *ret_netdev (malloc'd), the options to append to `-netdev user,id=net0`
 * (struct vm_config.netdev_extra):
 *   net=169.254.0.0/16,host=169.254.0.2,dns=169.254.0.3,dhcpstart=169.254.0.15,
 *   restrict=on,guestfwd=tcp:169.254.169.254:80-cmd:KILN imds-serve DIR
 * `flags`: 0, or IMDS_NET_EGRESS for restrict=off: the guest then reaches
 * the internet, and also (slirp's doing, QEMU cannot turn it off) the
 * host's 127.0.0.1 through every other address of 169.254.0.0/16 (as it
 * did through 10.0.2.2 before).  Never the host's link-local network.
 * `kiln` is the absolute path of the kiln executable (NULL: this process's
 * own, /proc/self/exe).  -EINVAL for an incomplete instance or a path with
 * a comma, space or quote (QEMU's option syntax cannot carry them).
 * The guest then gets 169.254.0.15 by DHCP: private_ip should say so. */
int imds_instance_install(const char *dir, const struct imds_instance *in, const char *kiln,
                          unsigned flags, char **ret_netdev);

/* Just the netdev options of imds_instance_install(), for a guest that
 * has no metadata: `kiln imds-serve DIR` then finds no DIR/imds.instance
 * and closes each connection unanswered (the address is still caught, so
 * nothing reaches the host's link-local network). */
int imds_netdev_options(const char *dir, const char *kiln, unsigned flags, char **ret_netdev);

/* Remove the files imds_instance_install() wrote (once QEMU is gone; an
 * imds-serve still running has its file open and finishes).  Missing
 * files are fine. */
int imds_instance_uninstall(const char *dir);

/* `kiln imds-serve DIR`: serve HTTP on in_fd/out_fd until EOF, or until
 * no request has come for 10 s (each connection is a process).  Messages
 * go to DIR/imds.log, never to stderr (QEMU hands the guest's socket as
 * stderr too). */
int imds_serve(const char *dir, int in_fd, int out_fd);

#endif

/* Private to src/api/: the request context handlers see, the action table,
 * the EC2 error vocabulary (mapped in errors.c) and small shared helpers. */
#ifndef KILN_API_INTERNAL_H
#define KILN_API_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/api.h"
#include "api/query.h"
#include "api/xml.h"
#include "registry/permissions.h"

#define API_REQUEST_ID_SIZE 37 /* UUID v4 text with NUL */


/* Fill buf with a random (version 4) UUID.  Returns 0 or -errno. */
int api_request_id(char buf[API_REQUEST_ID_SIZE]);

/* Append s as a JSON string literal (quotes included); control characters
 * are escaped, invalid UTF-8 bytes become U+FFFD (json-write.c; the reader
 * is common/json.h). */
void json_write_string(struct strbuf *b, const char *s);

/* ---- errors (errors.c) ---- */

/* The kind of resource an operation was about, which turns a generic
 * condition (not found, malformed id, in use) into its EC2 code. */
enum api_resource {
    API_RES_NONE,
    API_RES_IMAGE,
    API_RES_SNAPSHOT,
    API_RES_VOLUME,
    API_RES_INSTANCE,
    API_RES_KEY_PAIR,
    API_RES_SECURITY_GROUP,
    API_RES_VPC,    /* the region's default VPC (vpcs.c) */
    API_RES_SUBNET, /* and its one subnet */
};
#define API_RES_COUNT (API_RES_SUBNET + 1)

/* Conditions a handler or the server names explicitly; API_ERR_NONE means
 * "derive it from the errno". */
enum api_error {
    API_ERR_NONE,
    API_ERR_AUTH_FAILURE,
    API_ERR_UNAUTHORIZED,
    API_ERR_MISSING_ACTION,
    API_ERR_INVALID_ACTION,
    API_ERR_MISSING_PARAMETER,
    API_ERR_INVALID_PARAMETER_VALUE,
    API_ERR_INVALID_PARAMETER_COMBINATION,
    API_ERR_UNKNOWN_PARAMETER,
    API_ERR_MALFORMED_QUERY,
    API_ERR_UNSUPPORTED_VERSION,
    API_ERR_UNKNOWN_REGION,
    API_ERR_REQUEST_TOO_LARGE,
    API_ERR_METHOD_NOT_ALLOWED,
    API_ERR_DRY_RUN_OPERATION,
    API_ERR_NOT_FOUND,    /* with a resource kind */
    API_ERR_MALFORMED_ID, /* with a resource kind */
    API_ERR_IN_USE,       /* with a resource kind */
    API_ERR_DUPLICATE,    /* with a resource kind */
    API_ERR_OPERATION_NOT_PERMITTED,
    API_ERR_INVALID_ID,               /* InvalidID: an id of no known kind */
    API_ERR_INVALID_PAGINATION_TOKEN, /* InvalidPaginationToken */
    API_ERR_TAG_LIMIT_EXCEEDED,       /* TagLimitExceeded */
    API_ERR_RESOURCE_AUTH_FAILURE,    /* AuthFailure (400): visible, not yours */
    API_ERR_IMAGE_UNAVAILABLE,        /* InvalidAMIID.Unavailable: deregistered */
    API_ERR_AMI_NAME_MALFORMED,       /* InvalidAMIName.Malformed */
    API_ERR_INVALID_BLOCK_DEVICE_MAPPING, /* InvalidBlockDeviceMapping */
    API_ERR_IDEMPOTENT_MISMATCH, /* IdempotentParameterMismatch: ClientToken reused */
    API_ERR_KEY_FORMAT,          /* InvalidKey.Format: ImportKeyPair's material */
    API_ERR_PERMISSION_DUPLICATE, /* InvalidPermission.Duplicate: a rule that exists */
    API_ERR_INSUFFICIENT_CAPACITY, /* InsufficientInstanceCapacity: the host is full */
    API_ERR_INTERNAL,
    API_ERR_UNAVAILABLE,
};

/* What goes on the wire for an error. */
struct api_error_reply {
    const char *code; /* EC2 error code */
    int status;       /* HTTP status */
    /* Whether the internal message may be shown to the client; when not,
     * `message` is the fixed public text and the detail only goes to the
     * log. */
    bool expose;
    const char *message;
};

/* THE mapping from (errno, explicit condition, resource kind) to an EC2
 * error code and HTTP status; docs/api.md lists it.  err is a -errno. */
void api_error_map(int err, enum api_error e, enum api_resource res,
                   struct api_error_reply *ret);

/* ---- requests and actions ---- */

struct api_server_state;

/* What a handler knows about the request.  Everything is borrowed for the
 * duration of the request. */
struct api_ctx {
    const char *request_id;
    const char *action;
    const char *account;  /* the 12-digit account the credential belongs to */
    const char *region;   /* from the credential scope, one of the server's */
    const char *data_dir; /* for region_open() (service.h) */
    const char *endpoint; /* "http://<Host header>", the URL the client used */
    const char *const *regions; /* every region served */
    size_t n_regions;
    bool dry_run;
    /* Set by api_fail() (or by the handler) to name the error precisely. */
    enum api_error error;
    enum api_resource resource;
};

/* Record an explicit error condition and a message for the client; returns
 * the matching -errno (-EINVAL for parameter errors), so that
 * `return api_fail(ctx, API_ERR_MISSING_PARAMETER, "...")` reads well. */
int api_fail(struct api_ctx *ctx, enum api_error e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Refuse an id that is not "<prefix>-" and 17 hex digits with the
 * resource's .Malformed error; 0 when it is well formed. */
int api_id_check(struct api_ctx *ctx, enum api_resource res, const char *prefix,
                 const char *id);

/* The ids joined with ", ", cut after about 300 characters with ", ..."
 * (for NotFound messages); owned by the caller. */
char *api_join_ids(const char *const *ids, size_t n);

/* A handler writes the members of its response into x (the envelope is
 * already open) and returns >= 0, or returns -errno having recorded the
 * error (api_fail() or error_set() plus ctx->resource). */
typedef int (*api_handler_fn)(struct api_ctx *ctx, const struct query *q, struct xml *x);

enum {
    /* The handler checks DryRun itself (after its own validation and
     * permission checks, via api_dry_run()); otherwise the dispatcher
     * answers DryRunOperation for it before calling it, which is right
     * for operations that only read. */
    API_ACTION_OWN_DRY_RUN = 1 << 0,
};

struct api_action {
    const char *name;
    api_handler_fn handler;
    unsigned flags;
};

/* The EC2 action named `name`, or NULL. */
const struct api_action *api_ec2_action_find(const char *name);

/* For handlers with API_ACTION_OWN_DRY_RUN: when the request is a dry run,
 * record DryRunOperation and return a negative value to return at once;
 * else 0. */
int api_dry_run(struct api_ctx *ctx);

/* ---- shared Describe* parameters (filters.c) ---- */

/* A parsed Filter.N list: name and values, all borrowed from the query. */
struct api_filter {
    const char *name;
    const char **values;
    size_t n_values;
};

struct api_filters {
    struct query_item *items;
    struct api_filter *f;
    size_t n;
};

void api_filters_release(struct api_filters *fs);

/* Parse Filter.N.Name / Filter.N.Value.M; every name must be one of
 * `known` (NULL-terminated), where an entry ending in ':' ("tag:") admits
 * every name it prefixes ("tag:Env").  Unknown names are
 * InvalidParameterValue. */
int api_filters_parse(struct api_ctx *ctx, const struct query *q, const char *const *known,
                      struct api_filters *ret);

/* true when every filter named `name` has a value matching `v` (EC2
 * wildcards: * and ?).  Filters with other names do not apply. */
bool api_filters_match(const struct api_filters *fs, const char *name, const char *v);

/* true when one of the values of filter `f` matches v. */
bool api_filter_match_one(const struct api_filter *f, const char *v);

/* true when a filter is named `name`. */
bool api_filters_has(const struct api_filters *fs, const char *name);

/* true when a filter looks at tags (tag:KEY or tag-key). */
bool api_filters_need_tags(const struct api_filters *fs);

/* The tag filters against a resource's tags[0..n): every tag:KEY filter
 * needs a tag KEY whose value matches, every tag-key filter a key that
 * matches.  Other filters do not apply. */
struct registry_tag;
bool api_filters_match_tags(const struct api_filters *fs, const struct registry_tag *tags,
                            size_t n);

bool api_in_list(const char *const *list, size_t n, const char *s);

/* An optional boolean parameter (false when absent). */
int api_get_bool(struct api_ctx *ctx, const struct query *q, const char *name, bool *ret);

/* Decode the base64 text of a blob parameter of at most `max` bytes: 0 and
 * a new buffer in *ret (the caller frees it) with its length in *ret_n;
 * -EMSGSIZE when b64 is empty, its length is not a multiple of 4 or
 * longer than max bytes encode to (the decoded length may still exceed
 * max by up to 2: check it where it matters); -EINVAL when it is not
 * base64.  Records no error: the caller words it for its parameter. */
int api_base64_decode(const char *b64, size_t max, uint8_t **ret, size_t *ret_n);

/* ---- pagination (filters.c) ---- */

#define API_MAX_RESULTS_MIN 5
#define API_MAX_RESULTS_MAX 1000

/* MaxResults and NextToken.  Paging is opt-in (the reference's 2.3): with
 * neither, *ret_max is 0 (everything) and *ret_after NULL.  MaxResults
 * must be a number from 5 (values above 1000 are clamped to 1000) and
 * cannot be combined with explicit ids (`have_ids`: InvalidParameter
 * Combination).  NextToken is a token from api_token_make(); it decodes
 * to the sort key of the last item of the previous page, *ret_after, a
 * new string the caller frees.  Errors are recorded (api_fail()). */
int api_paging_parse(struct api_ctx *ctx, const struct query *q, bool have_ids,
                     const char *ids_param, size_t *ret_max, char **ret_after);

/* The NextToken for a page that ended at the item with sort key `key`:
 * hex text, so it is safe in any query string.  A new string. */
char *api_token_make(const char *key);

/* A paged listing (DescribeSnapshots, DescribeVolumes), filters.c: the
 * rows that pass a handler's own checks, taken in sort-key order (the
 * registry lists them so), become candidates; the tag filters are applied
 * as they are added, then the first page of at most `max` (0: all) gets
 * its tags, and the NextToken is written when more follow.  A candidate
 * that is not the caller's shows no tags and matches tag filters as a
 * resource without any. */
struct api_candidate {
    char key[64];   /* "<time, 20 digits>.<id>": the paging key */
    void *row;      /* the handler's registry row (not owned) */
    const char *id; /* its resource id, for its tags (points into row) */
    bool owned;     /* the caller's: its tags are shown */
    struct registry_tag *tags;
    size_t n_tags;
    bool tags_loaded;
};

struct api_candidates {
    struct api_candidate *c; /* room for every row */
    size_t n;
};

struct region;
void api_candidates_init(struct api_candidates *cs, size_t n_rows);
/* 1 when added; 0 when its key is not after `after` (may be NULL) or the
 * tag filters of fs reject it; -errno when its tags cannot be read. */
int api_candidates_add(struct api_candidates *cs, struct region *rg, const struct api_filters *fs,
                       const char *after, int64_t time, const char *id, void *row, bool owned);
/* Load the tags of the first page; *ret_n is its size. */
int api_candidates_page(struct api_candidates *cs, struct region *rg, size_t max, size_t *ret_n);
/* The nextToken element when the page of n_page leaves candidates out. */
void api_candidates_write_token(struct xml *x, const struct api_candidates *cs, size_t n_page);
void api_candidates_release(struct api_candidates *cs);

/* ---- owners (filters.c) ---- */

/* true for a 12-digit account id. */
bool api_is_account_id(const char *s);

/* The provider account's id (service_provider_account(), which creates it
 * on first use) into ret, "" without a data directory.  It never changes
 * once it exists, so it is looked up once per data directory and process:
 * DescribeImages and DescribeSnapshots need it on every request. */
int api_provider_account(const struct api_ctx *ctx, char ret[ACCOUNT_ID_SIZE]);

/* Owner.N of DescribeImages and DescribeSnapshots: self, 12-digit ids, the
 * provider alias SERVICE_PROVIDER_ACCOUNT (the provider account, skipped
 * when there is none) and AWS's aliases (which own nothing here, skipped);
 * InvalidParameterValue for anything else.  ret_provider gets the provider
 * account's id first (api_provider_account(); "" without one); on success
 * *ret is a new array (free() it) of the accounts, borrowed from owners,
 * ctx or ret_provider, and *ret_n their number: with n > 0 and *ret_n == 0
 * nothing can match. */
int api_owners_resolve(struct api_ctx *ctx, const char **owners, size_t n,
                       char ret_provider[ACCOUNT_ID_SIZE], const char ***ret, size_t *ret_n);

/* ExecutableBy.N / RestorableBy.N: `self` (replaced in place by the
 * caller's account), `all` and 12-digit ids; InvalidParameterValue for
 * anything else. */
int api_users_resolve(struct api_ctx *ctx, const char **users, size_t n);

/* Explicit ids of a Describe must all name resources the caller sees: the
 * ids of ids[] (n_ids) for which seen(ud, k, id) holds for no row k <
 * n_rows, each once and in order, go to not_found() (InvalidXxx.NotFound
 * naming them all), whose result is returned; 0 when there are none. */
int api_ids_must_exist(struct api_ctx *ctx, const char **ids, size_t n_ids, size_t n_rows,
                       bool (*seen)(const void *ud, size_t k, const char *id), const void *ud,
                       int (*not_found)(struct api_ctx *ctx, const char *const *ids, size_t n));

/* The start every paged Describe shares, after it has checked its own
 * parameters: MaxResults and NextToken (api_paging_parse(), `have_ids` and
 * `ids_param` as there), the Filter.N list against `known`, DryRun (after
 * validation, so that a dry run reports bad parameters; whether unknown ids
 * exist is not checked for one), then the region opened for reading
 * (api_region_open(): d->rg NULL when the region does not exist yet).
 * Returns 0 with *d filled, or -errno (recorded) with nothing to release;
 * the caller releases a filled *d with api_describe_release(). */
struct api_describe {
    size_t max;   /* page size, 0 for everything */
    char *after;  /* sort key of the last item of the previous page, or NULL */
    struct api_filters fs;
    struct region *rg;
};

int api_describe_begin(struct api_ctx *ctx, const struct query *q, bool have_ids,
                       const char *ids_param, const char *const *known, struct api_describe *d);
void api_describe_release(struct api_describe *d);

/* ---- actions in their own files ---- */

/* snapshots.c */
struct region;
struct registry_snapshot;
struct registry_tag;

/* Open the region the request was signed for (see the design notes in
 * snapshots.c).  Returns 0 with *ret NULL when the region holds no data
 * yet (an empty region), 0 with an open region to region_free(), or
 * -errno. */
int api_region_open(struct api_ctx *ctx, struct region **ret);

/* region-cache.c: a read-only region handle that outlives the request, for
 * read-only handlers (DescribeImages).  api_region_acquire() is
 * api_region_open() but may hand out a handle an earlier request released
 * (*ret NULL for an empty region, as there); give it back with
 * api_region_release(rg, keep), keep = whether the request succeeded (a
 * failed one's handle is closed).  Release accepts NULL. */
int api_region_acquire(struct api_ctx *ctx, struct region **ret);
void api_region_release(struct region *rg, bool keep);
/* Close every idle handle (at shutdown, and in tests). */
void api_region_cache_clear(void);

/* 0 for a well-formed snapshot id, else InvalidSnapshotID.Malformed. */
int api_snapshot_id_check(struct api_ctx *ctx, const char *id);

/* Record InvalidSnapshot.NotFound naming the ids; returns -ENOENT. */
int api_snapshot_not_found(struct api_ctx *ctx, const char *const *ids, size_t n);

/* Unix milliseconds as EC2 writes times: 2030-01-02T03:04:05.000Z. */
const char *api_format_time(int64_t ms, char *buf, size_t size);

/* <tagSet> with an <item><key/><value/></item> per tag (always written,
 * empty when n is 0). */
void api_write_tag_set(struct xml *x, const struct registry_tag *tags, size_t n);

int api_describe_snapshots(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_delete_snapshot(struct api_ctx *ctx, const struct query *q, struct xml *x);

/* sharing.c: createVolumePermission and image block public access */
int api_describe_snapshot_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_modify_snapshot_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_reset_snapshot_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_enable_image_block_public_access(struct api_ctx *ctx, const struct query *q,
                                         struct xml *x);
int api_disable_image_block_public_access(struct api_ctx *ctx, const struct query *q,
                                          struct xml *x);
int api_get_image_block_public_access_state(struct api_ctx *ctx, const struct query *q,
                                            struct xml *x);
/* Whether the caller's account blocks new public sharing of images in
 * the request's region (rg may be NULL: an empty region blocks nothing).
 * Returns 0 with *ret set, or -errno. */
int api_image_public_sharing_blocked(const struct api_ctx *ctx, struct region *rg, bool *ret);

/* tags.c */
/* Check one tag: key 1 to 128 characters not starting with "aws:", value
 * (may be NULL) at most 256.  Errors are recorded (api_fail()). */
int api_tag_check(struct api_ctx *ctx, const char *key, const char *value);
#define API_TAGS_PER_RESOURCE_MAX 50

/* TagSpecification.N of a creating action: each spec's ResourceType must
 * be the type of one of targets[0..n) (else InvalidParameterValue), and
 * its tags are added to that target's list (*tags, *n_tags: an array the
 * caller frees, whose strings borrow from q; a repeated key: the last
 * value wins, as in CreateTags), at most API_TAGS_PER_RESOURCE_MAX a
 * target.  On error the lists are freed and emptied. */
struct api_tag_target {
    const char *type; /* "image", "snapshot", "volume" */
    struct registry_tag **tags;
    size_t *n_tags;
};
int api_tag_specs_parse(struct api_ctx *ctx, const struct query *q,
                        const struct api_tag_target *targets, size_t n);
/* Add key=value to *tags[0..*n) (the strings borrowed), replacing the
 * value of a key it has. */
void api_tags_add(struct registry_tag **tags, size_t *n, const char *key, const char *value);

int api_create_tags(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_delete_tags(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_describe_tags(struct api_ctx *ctx, const struct query *q, struct xml *x);

/* images.c */
int api_register_image(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_describe_images(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_deregister_image(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_describe_image_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_modify_image_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_reset_image_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_enable_image_deprecation(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_disable_image_deprecation(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_enable_image_deregistration_protection(struct api_ctx *ctx, const struct query *q,
                                               struct xml *x);
int api_disable_image_deregistration_protection(struct api_ctx *ctx, const struct query *q,
                                                struct xml *x);
int api_enable_image(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_disable_image(struct api_ctx *ctx, const struct query *q, struct xml *x);

/* 0 for a well-formed image id, else InvalidAMIID.Malformed. */
int api_image_id_check(struct api_ctx *ctx, const char *id);
/* Record InvalidAMIID.NotFound naming the ids; returns -ENOENT. */
int api_image_not_found(struct api_ctx *ctx, const char *const *ids, size_t n);
/* images.c: InvalidAMIName.Duplicate naming the image that holds `name`,
 * when one of the caller's live images (any but deregistered) does; else
 * 0 (RegisterImage, CopyImage's checks and CreateImage). */
int api_image_name_check(struct api_ctx *ctx, struct region *rg, const char *name);
/* ---- permissions.c: who may use a resource; permission changes ---- */

struct registry_image;

/* What the caller may do with a resource (see the design notes in
 * permissions.c); the values are ordered. */
enum api_access {
    API_ACCESS_NONE,   /* cannot see it: it does not exist for the caller */
    API_ACCESS_SHARED, /* sees and uses it (a user permission or "all") */
    API_ACCESS_OWNER,  /* owns it: may change it */
};

/* THE rule: `account` owns it, or a user permission names it
 * (user_permission), or the resource is public. */
enum api_access api_access_decide(const char *account, const char *owner, bool user_permission,
                                  bool is_public);

/* The caller's access to img, from its loaded permissions; a deregistered
 * image is NONE, to its owner too. */
enum api_access api_image_access(const struct api_ctx *ctx, const struct registry_image *img);

/* The caller's access to snapshot s (its createVolumePermissions are read
 * from rg unless the caller owns it).  Returns 0 with *ret set, or -errno. */
int api_snapshot_access(const struct api_ctx *ctx, struct region *rg,
                        const struct registry_snapshot *s, enum api_access *ret);

/* api_image_access() != API_ACCESS_NONE. */
bool api_image_visible(const struct api_ctx *ctx, const struct registry_image *img);

/* Whether the caller OWNS snapshot s (the name is older than enum
 * api_access): the test for changing it, tagging it and seeing its tags. */
bool api_snapshot_visible(const struct api_ctx *ctx, const struct registry_snapshot *s);

/* The answer of an operation that needs `need` on resource `id` of kind
 * res when the caller has `have`: 0 when enough; the resource's NotFound
 * (api_not_found()) when the caller cannot see it; AuthFailure ("Not
 * authorized for image:ami-...") when it sees but does not own it. */
int api_access_require(struct api_ctx *ctx, enum api_resource res, const char *id,
                       enum api_access have, enum api_access need);

/* Record the NotFound of resource kind res naming the ids (the image and
 * snapshot wording of api_image_not_found() and api_snapshot_not_found(),
 * "The volume 'vol-...' does not exist." for volumes); returns -ENOENT. */
int api_not_found(struct api_ctx *ctx, enum api_resource res, const char *const *ids, size_t n);

/* One permission change of a Modify*Attribute request. */
struct api_permission_change {
    bool add;
    enum registry_permission_kind kind;
    const char *value; /* borrowed from the query */
};

struct api_permission_changes {
    struct api_permission_change *v;
    size_t n;
    bool adds, removes; /* whether any change adds, any removes */
};

void api_permission_changes_release(struct api_permission_changes *c);

/* How one attribute's permissions are written in a request. */
struct api_permission_form {
    const char *param;     /* the structured form's prefix: "LaunchPermission" */
    const char *attribute; /* the Attribute value: "launchPermission" */
    bool organizations;    /* the form has OrganizationArn/OrganizationalUnitArn (refused) */
    size_t max;            /* most changes per request; 0: no limit of its own */
};

/* Whether the request uses the structured form: a parameter "<param>.". */
bool api_permission_form_used(const struct query *q, const struct api_permission_form *form);

/* Append the changes of `<param>.Add.N.UserId|Group` then
 * `<param>.Remove.N...` to *ret.  An entry with neither field is
 * MissingParameter, a group other than "all" or a user that is not a
 * 12-digit account InvalidParameterValue, as is going over form->max.
 * Errors are recorded (api_fail()); *ret keeps what was parsed. */
int api_permission_parse_structured(struct api_ctx *ctx, const struct query *q,
                                    const struct api_permission_form *form,
                                    struct api_permission_changes *ret);

/* The legacy form: OperationType=add|remove with UserId.N and
 * UserGroup.N (at least one), appended to *ret; errors as above. */
int api_permission_parse_legacy(struct api_ctx *ctx, const struct query *q,
                                const struct api_permission_form *form,
                                struct api_permission_changes *ret);

/* create-image.c */
int api_create_image(struct api_ctx *ctx, const struct query *q, struct xml *x);

/* volumes.c */
int api_create_volume(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_describe_volumes(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_delete_volume(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_modify_volume(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_create_snapshot(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_describe_volume_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x);

/* instances.c */
int api_run_instances(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_describe_instances(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_describe_instance_status(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_stop_instances(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_start_instances(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_reboot_instances(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_terminate_instances(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_get_console_output(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_describe_instance_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x);

/* copy.c */
int api_copy_image(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_copy_snapshot(struct api_ctx *ctx, const struct query *q, struct xml *x);


/* ebs.c: the EBS direct API (rest-json) on the same listener.  server.c
 * hands it every request whose path is under /snapshots, after SigV4
 * (service `ebs`) and the region check; the handler fills *resp (status,
 * headers, body) for success and for every error. */
struct sigv4_header;

struct api_ebs_request {
    const char *method, *path, *query; /* raw path and query (no '?') */
    const struct sigv4_header *headers;
    size_t n_headers;
    const void *body;
    size_t body_len;
};

#define API_EBS_MAX_HEADERS 6

struct api_ebs_response {
    int status;
    const char *error_code; /* x-amzn-ErrorType of an error, else NULL */
    const char *content_type;
    void *body; /* owned: api_ebs_response_release() */
    size_t body_len;
    struct {
        const char *name;
        char value[128];
    } headers[API_EBS_MAX_HEADERS];
    size_t n_headers;
};

/* true for the paths the EBS direct API serves (/snapshots...). */
bool api_ebs_path(const char *path);
/* The largest body a request may carry: a block for PUT, small JSON else. */
size_t api_ebs_max_body(const char *method, const char *path);
void api_ebs_handle(struct api_ctx *ctx, const struct api_ebs_request *rq,
                    struct api_ebs_response *resp);
/* A failed authentication (403 AccessDeniedException) and any other error
 * the server answers before the handler runs, in the rest-json form. */
void api_ebs_auth_failure(struct api_ebs_response *resp, const char *message);
void api_ebs_fail(struct api_ebs_response *resp, int status, const char *code,
                  const char *reason, const char *message);
void api_ebs_response_release(struct api_ebs_response *resp);
/* Cancel the timed-out uploads of every region (at server start). */
void api_ebs_sweep(const char *data_dir, const char *const *regions, size_t n);

/* keypairs.c: key pairs and security groups */
int api_create_key_pair(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_import_key_pair(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_describe_key_pairs(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_delete_key_pair(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_create_security_group(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_describe_security_groups(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_delete_security_group(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_authorize_security_group_ingress(struct api_ctx *ctx, const struct query *q,
                                         struct xml *x);

/* vpcs.c: the default VPC and its subnet (the design notes there) */
#define API_DEFAULT_VPC_CIDR "127.100.0.0/16" /* the instances' addresses */
/* The ids of the caller's default VPC and subnet in the request's region,
 * derived from account and region. */
void api_default_vpc_id(const struct api_ctx *ctx, char ret[ID_MAX_SIZE]);
void api_default_subnet_id(const struct api_ctx *ctx, char ret[ID_MAX_SIZE]);
/* 0 when id names the caller's default VPC (subnet); else records
 * InvalidVpcID.Malformed or .NotFound (InvalidSubnetID.*). */
int api_vpc_check(struct api_ctx *ctx, const char *id);
int api_subnet_check(struct api_ctx *ctx, const char *id);
int api_describe_vpcs(struct api_ctx *ctx, const struct query *q, struct xml *x);
int api_describe_subnets(struct api_ctx *ctx, const struct query *q, struct xml *x);

/* ---- ClientToken (client-token.c) ---- */

struct digest;
struct registry;
struct service_client_token;

/* The digest of what a request asks for, recorded with its ClientToken:
 * every parameter but ClientToken, Version, DryRun and X-Amz-*, sorted by
 * name, each hashed as "LEN:LEN:KEYVALUE" (the design notes there). */
void api_params_digest(const struct query *q, struct digest *ret);

/* Look t's token up in client_tokens: 0 and ret_id[0] == '\0' when it is
 * new; 0 and the first request's resource id in ret_id when this request
 * repeats it (same action, same digest); IdempotentParameterMismatch
 * (recorded with api_fail()) when it was used for something else. */
int api_client_token_check(struct api_ctx *ctx, struct registry *reg,
                           const struct service_client_token *t, char ret_id[ID_MAX_SIZE]);

#endif

/* Distribution of a build's image to its regions: the spec recorded on the
 * build row, copies through the CopyImage path, and the launch
 * permissions, deprecation and tags applied in every region (the design
 * notes are in distribute.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "bake/distribute.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/hash.h"
#include "common/json.h"
#include "common/strbuf.h"
#include "common/util.h"
#include "registry/images.h"
#include "registry/jobs.h"
#include "service/service.h"

#define POLL_MS 200
#define MS_PER_MINUTE 60000
#define TAG_KEY_MAX 128
#define TAG_VALUE_MAX 256
#define LINE_MAX_BYTES 1024

/* Image block public access, as src/api/sharing.c stores it in a region's
 * settings: key "image-block-public-access:<account>", value
 * "block-new-sharing" while enabled.  (The API owns the setting; the baker
 * reads it so that a template cannot publish what the account blocked.) */
#define BPA_KEY_PREFIX "image-block-public-access:"
#define BPA_BLOCKED "block-new-sharing"

/* What the client tokens of distribution copies are recorded as. */
#define TOKEN_ACTION "kiln-bake-distribute"

/* ---- the spec: a small JSON object on the build row ---- */

void bake_distribution_spec_release(struct bake_distribution_spec *s)
{
    for (size_t i = 0; i < s->n_user_ids; i++)
        free(s->user_ids[i]);
    free(s->user_ids);
    registry_tag_list_free(s->tags, s->n_tags);
    registry_tag_list_free(s->snapshot_tags, s->n_snapshot_tags);
    memset(s, 0, sizeof(*s));
}

static bool account_ok(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++)
        if (s[n] < '0' || s[n] > '9')
            return false;
    return n == 12;
}

/* Code points of a UTF-8 string (the JSON reader checked it). */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

/* EC2's rules for one tag (as src/api/tags.c checks them), `place` naming
 * where it comes from. */
static int check_tag(int err, const char *place, const char *k, const char *v)
{
    size_t n = utf8_chars(k);

    if (n == 0 || n > TAG_KEY_MAX)
        return error_set(err, "%s: a tag key must be 1 to %d characters long", place, TAG_KEY_MAX);
    if (strncmp(k, "aws:", 4) == 0)
        return error_set(err, "%s.%s: tag keys starting with 'aws:' are reserved", place, k);
    if (utf8_chars(v) > TAG_VALUE_MAX)
        return error_set(err, "%s.%s: a tag value must be at most %d characters long", place, k,
                         TAG_VALUE_MAX);
    return 0;
}

static int check_kvs(const struct bake_kvs *kv, const char *place)
{
    int e = 0;

    if (kv->n > BAKE_DISTRIBUTE_TAGS_MAX)
        return error_set(EINVAL, "%s: %zu tags, at most %d", place, kv->n,
                         BAKE_DISTRIBUTE_TAGS_MAX);
    for (size_t i = 0; e >= 0 && i < kv->n; i++)
        e = check_tag(EINVAL, place, kv->items[i].key, kv->items[i].value);
    return e;
}

static void put_tags(FILE *f, const struct registry_tag *t, size_t n)
{
    fputc('{', f);
    for (size_t i = 0; i < n; i++) {
        if (i)
            fputc(',', f);
        json_fput_string(f, t[i].key);
        fputc(':', f);
        json_fput_string(f, t[i].value);
    }
    fputc('}', f);
}

int bake_distribution_spec_write(const struct bake_distribution_spec *s, char **ret)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (!f)
        return error_set(ENOMEM, "cannot write a distribution spec: %s", strerror(errno));
    fprintf(f, "{\"version\":%d,\"user_ids\":[", BAKE_SPEC_VERSION);
    for (size_t i = 0; i < s->n_user_ids; i++) {
        if (i)
            fputc(',', f);
        json_fput_string(f, s->user_ids[i]);
    }
    fprintf(f, "],\"groups\":[%s],\"deprecate_at\":%lld,\"deprecate_after_s\":%llu",
            s->is_public ? "\"all\"" : "", (long long)s->deprecate_at,
            (unsigned long long)s->deprecate_after_s);
    fputs(",\"tags\":", f);
    put_tags(f, s->tags, s->n_tags);
    fputs(",\"snapshot_tags\":", f);
    put_tags(f, s->snapshot_tags, s->n_snapshot_tags);
    fputc('}', f);
    if (fclose(f) != 0) {
        free(text);
        return error_set(ENOMEM, "cannot write a distribution spec");
    }
    if (len > BAKE_SPEC_MAX) {
        free(text);
        return error_set(EINVAL, "the distribution spec takes %zu bytes, more than %d", len,
                         BAKE_SPEC_MAX);
    }
    *ret = text;
    return 0;
}

static int bad(const char *what)
{
    return error_set(EBADMSG, "malformed distribution spec: %s", what);
}

static int read_tags(const struct json_value *v, const char *place, struct registry_tag **ret,
                     size_t *ret_n)
{
    struct registry_tag *t;
    int e = 0;

    if (!v || v->type != JSON_OBJECT)
        return error_set(EBADMSG, "malformed distribution spec: %s is not an object", place);
    if (v->n > BAKE_DISTRIBUTE_TAGS_MAX)
        return error_set(EBADMSG, "malformed distribution spec: %s has more than %d tags", place,
                         BAKE_DISTRIBUTE_TAGS_MAX);
    t = xcalloc(v->n + 1, sizeof(*t));
    for (size_t i = 0; e >= 0 && i < v->n; i++) {
        if (v->items[i].type != JSON_STRING) {
            e = error_set(EBADMSG, "malformed distribution spec: %s.%s is not a string", place,
                          v->keys[i]);
            break;
        }
        e = check_tag(EBADMSG, place, v->keys[i], v->items[i].string);
        if (e < 0) {
            _cleanup_free_ char *why = xstrdup(error_message());
            e = error_set(EBADMSG, "malformed distribution spec: %s", why);
            break;
        }
        t[i].key = xstrdup(v->keys[i]);
        t[i].value = xstrdup(v->items[i].string);
    }
    if (e < 0) {
        registry_tag_list_free(t, v->n);
        return e;
    }
    *ret = t;
    *ret_n = v->n;
    return 0;
}

int bake_distribution_spec_parse(const char *text, size_t len, struct bake_distribution_spec *ret)
{
    static const char *const keys[] = {"version",          "user_ids", "groups",
                                       "deprecate_at",     "tags",     "snapshot_tags",
                                       "deprecate_after_s"};
    _cleanup_(json_freep) struct json_value *root = NULL;
    const struct json_value *v, *users, *groups, *at, *after;
    struct bake_distribution_spec s = {0};
    int e;

    if (len > BAKE_SPEC_MAX)
        return bad("too long");
    e = json_parse(text, len, &root);
    if (e < 0) {
        _cleanup_free_ char *why = xstrdup(error_message() ? error_message() : "not JSON");
        return error_set(EBADMSG, "malformed distribution spec: %s", why);
    }
    if (root->type != JSON_OBJECT)
        return bad("not an object");
    for (size_t i = 0; i < root->n; i++) {
        bool known = false;
        for (size_t k = 0; k < ARRAY_SIZE(keys); k++)
            known = known || strcmp(root->keys[i], keys[k]) == 0;
        if (!known)
            return error_set(EBADMSG, "malformed distribution spec: unknown key '%.64s'",
                             root->keys[i]);
    }
    v = json_get(root, "version");
    if (!v || v->type != JSON_NUMBER || !v->is_integer || v->integer != BAKE_SPEC_VERSION)
        return bad("not version 1");
    users = json_get(root, "user_ids");
    groups = json_get(root, "groups");
    at = json_get(root, "deprecate_at");
    after = json_get(root, "deprecate_after_s");
    if (!users || users->type != JSON_ARRAY || users->n > BAKE_DISTRIBUTE_USERS_MAX)
        return bad("user_ids is not an array of at most 100 account ids");
    if (!groups || groups->type != JSON_ARRAY || groups->n > 1 ||
        (groups->n == 1 &&
         (groups->items[0].type != JSON_STRING || strcmp(groups->items[0].string, "all") != 0)))
        return bad("groups is not [] or [\"all\"]");
    if (!at || at->type != JSON_NUMBER || !at->is_integer || at->integer < 0 || !after ||
        after->type != JSON_NUMBER || !after->is_integer || after->integer < 0)
        return bad("deprecate_at or deprecate_after_s is not an integer >= 0");
    s.user_ids = xcalloc(users->n + 1, sizeof(*s.user_ids));
    for (size_t i = 0; i < users->n; i++) {
        if (users->items[i].type != JSON_STRING || !account_ok(users->items[i].string)) {
            bake_distribution_spec_release(&s);
            return bad("user_ids holds something that is not a 12-digit account id");
        }
        s.user_ids[s.n_user_ids++] = xstrdup(users->items[i].string);
    }
    s.is_public = groups->n == 1;
    s.deprecate_at = at->integer;
    s.deprecate_after_s = (uint64_t)after->integer;
    e = read_tags(json_get(root, "tags"), "tags", &s.tags, &s.n_tags);
    if (e >= 0)
        e = read_tags(json_get(root, "snapshot_tags"), "snapshot_tags", &s.snapshot_tags,
                      &s.n_snapshot_tags);
    if (e < 0) {
        bake_distribution_spec_release(&s);
        return e;
    }
    *ret = s;
    return 0;
}

/* ---- recording ---- */

static struct registry_tag *tags_from_kvs(const struct bake_kvs *kv)
{
    struct registry_tag *t = xcalloc(kv->n + 1, sizeof(*t));

    for (size_t i = 0; i < kv->n; i++) {
        t[i].key = xstrdup(kv->items[i].key);
        t[i].value = xstrdup(kv->items[i].value);
    }
    return t;
}

int bake_distribution_record(struct registry *reg, const char *build_id, const char *region,
                             const char *image_id, const struct bake_template *t)
{
    const struct bake_strv *regions = &t->distribution.regions;
    const struct bake_strv *users = &t->distribution.user_ids;
    const struct bake_strv *groups = &t->distribution.groups;
    struct registry_bake_distribution d = {0};
    struct bake_distribution_spec spec = {0};
    _cleanup_free_ const char **out = NULL;
    char *text = NULL;
    size_t n_out = 0;
    int e;

    if (!region || !region_name_is_valid(region))
        return error_set(EINVAL, "invalid build region '%.64s'", region ? region : "");
    if (!image_id || !id_is_valid("ami", image_id))
        return error_set(EINVAL, "malformed image id '%.*s'", ID_MAX_SIZE,
                         image_id ? image_id : "");
    if (!t->name || !t->name[0] || strlen(t->name) > BAKE_NAME_MAX)
        return error_set(EINVAL, "name: must be 1 to %d bytes", BAKE_NAME_MAX);
    if (regions->n > BAKE_DISTRIBUTE_REGIONS_MAX)
        return error_set(EINVAL, "distribution.regions: %zu regions, at most %d", regions->n,
                         BAKE_DISTRIBUTE_REGIONS_MAX);
    for (size_t i = 0; i < regions->n; i++) {
        if (!region_name_is_valid(regions->items[i]))
            return error_set(EINVAL,
                             "distribution.regions[%zu]: invalid region name '%.64s' (lowercase "
                             "letters, digits and dashes, starting with a letter, at most 32)",
                             i, regions->items[i]);
        for (size_t k = 0; k < i; k++)
            if (strcmp(regions->items[k], regions->items[i]) == 0)
                return error_set(EINVAL, "distribution.regions[%zu]: region '%s' is named twice", i,
                                 regions->items[i]);
    }
    if (users->n > BAKE_DISTRIBUTE_USERS_MAX)
        return error_set(EINVAL,
                         "distribution.launch_permission.user_ids: %zu accounts, at most %d",
                         users->n, BAKE_DISTRIBUTE_USERS_MAX);
    for (size_t i = 0; i < users->n; i++)
        if (!account_ok(users->items[i]))
            return error_set(EINVAL,
                             "distribution.launch_permission.user_ids[%zu]: '%.40s' is not a "
                             "12-digit account id",
                             i, users->items[i]);
    for (size_t i = 0; i < groups->n; i++)
        if (strcmp(groups->items[i], "all") != 0)
            return error_set(EINVAL,
                             "distribution.launch_permission.groups[%zu]: '%.40s': the only "
                             "group is \"all\"",
                             i, groups->items[i]);
    e = check_kvs(&t->output.tags, "output.tags");
    if (e >= 0)
        e = check_kvs(&t->output.snapshot_tags, "output.snapshot_tags");
    if (e < 0)
        return e;

    /* The spec: accounts without duplicates, the deprecation time fixed
     * now (rounded to the minute, as EC2 does), the tags. */
    spec.user_ids = xcalloc(users->n + 1, sizeof(*spec.user_ids));
    for (size_t i = 0; i < users->n; i++) {
        bool dup = false;
        for (size_t k = 0; k < spec.n_user_ids; k++)
            dup = dup || strcmp(spec.user_ids[k], users->items[i]) == 0;
        if (!dup)
            spec.user_ids[spec.n_user_ids++] = xstrdup(users->items[i]);
    }
    spec.is_public = groups->n > 0;
    spec.deprecate_after_s = t->distribution.deprecate_after_s;
    if (spec.deprecate_after_s) {
        int64_t at = wall_clock_ms() + (int64_t)spec.deprecate_after_s * 1000;
        spec.deprecate_at = (at + MS_PER_MINUTE / 2) / MS_PER_MINUTE * MS_PER_MINUTE;
    }
    spec.tags = tags_from_kvs(&t->output.tags);
    spec.n_tags = t->output.tags.n;
    spec.snapshot_tags = tags_from_kvs(&t->output.snapshot_tags);
    spec.n_snapshot_tags = t->output.snapshot_tags.n;
    e = bake_distribution_spec_write(&spec, &text);
    bake_distribution_spec_release(&spec);
    if (e < 0)
        return e;

    /* The build's region first, then the others in the template's order. */
    out = xcalloc(regions->n + 1, sizeof(*out));
    out[n_out++] = region;
    for (size_t i = 0; i < regions->n; i++)
        if (strcmp(regions->items[i], region) != 0)
            out[n_out++] = regions->items[i];
    snprintf(d.name, sizeof(d.name), "%s", t->name);
    snprintf(d.region, sizeof(d.region), "%s", region);
    snprintf(d.image_id, sizeof(d.image_id), "%s", image_id);
    d.spec = text;
    e = registry_bake_distribution_set(reg, build_id, &d, out, n_out, wall_clock_ms());
    free(text);
    return e;
}

/* ---- distributing ---- */

struct dist {
    const struct bake_distribute_options *o;
    struct region *home;
    struct registry_bake_build build;
    struct registry_bake_distribution rec;
    struct registry_image *source; /* the build's image in its region */
    struct bake_distribution_spec spec;
    struct registry_bake_output *outs;
    size_t n_outs;
    struct region **regions; /* per output; [0] is home (borrowed) */
    bool *waiting;           /* per output: a copy to wait for */
    size_t n_waiting;
    int lock_fd;         /* DATA/jobs.lock while we hold it, else -1 */
    bool lock_seen_held; /* another runner held it at some point */
    atomic_bool stop;    /* set at the deadline: stops a job we run */
    size_t n_failed, n_timed_out;
    int first_err;
    struct strbuf failures; /* "region: message; ..." */
};

static void say(struct dist *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(struct dist *d, const char *fmt, ...)
{
    char line[LINE_MAX_BYTES];
    va_list ap;

    if (!d->o->log)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    d->o->log(d->o->ud, line);
}

/* Write output row i. */
static int save(struct dist *d, size_t i)
{
    return registry_bake_output_update(d->home->reg, &d->outs[i], wall_clock_ms());
}

/* Record that region i failed with error `err` (its message from
 * error_message()). */
static int fail_region(struct dist *d, size_t i, int err)
{
    struct registry_bake_output *out = &d->outs[i];
    char msg[BAKE_ERROR_MAX + 1];

    error_describe(err, msg, sizeof(msg)); /* the message recorded for err, or strerror */
    out->state = BAKE_OUTPUT_FAILED;
    snprintf(out->error, sizeof(out->error), "%s", msg);
    say(d, "%s: failed: %s", out->region, msg);
    if (d->n_failed++ == 0)
        d->first_err = err < 0 ? err : -EIO;
    else
        strbuf_adds(&d->failures, "; ");
    strbuf_printf(&d->failures, "%s: %s", out->region, msg);
    return save(d, i);
}

/* Whether public sharing is blocked for the build's owner in region r. */
static int public_sharing_blocked(struct dist *d, struct region *r, bool *ret)
{
    _cleanup_free_ char *key = xasprintf("%s%s", BPA_KEY_PREFIX, d->build.owner);
    _cleanup_free_ char *value = NULL;
    int e = registry_setting_get(r->reg, key, &value);

    if (e == -ENOENT) {
        error_clear();
        *ret = false;
        return 0;
    }
    if (e < 0)
        return e;
    *ret = strcmp(value, BPA_BLOCKED) == 0;
    return 0;
}

/* Give image `id` of region r its permissions, deprecation and tags, in one
 * transaction.  It must be available and the build owner's. */
static int apply(struct dist *d, struct region *r, const char *id)
{
    struct registry_image *img = NULL;
    bool blocked = false;
    int e = registry_begin(r->reg);

    if (e < 0)
        return e;
    e = registry_image_get(r->reg, id, &img);
    if (e == -ENOENT)
        e = error_set(ENOENT, "image '%s' does not exist in region '%s'", id, r->name);
    if (e >= 0 && img->state != IMAGE_AVAILABLE)
        e = error_set(EINVAL, "image '%s' in region '%s' is %s, not available", id, r->name,
                      image_state_to_string(img->state));
    if (e >= 0 && strcmp(img->owner, d->build.owner) != 0)
        e = error_set(EACCES,
                      "image '%s' in region '%s' belongs to account %s, not to the "
                      "build's owner %s",
                      id, r->name, img->owner, d->build.owner);
    if (e >= 0 && d->spec.is_public && !img->is_public) {
        e = public_sharing_blocked(d, r, &blocked);
        if (e >= 0 && blocked)
            e = error_set(EACCES,
                          "cannot make image '%s' public in region '%s': block public access "
                          "for AMIs is enabled for account %s there "
                          "(DisableImageBlockPublicAccess, then retry)",
                          id, r->name, d->build.owner);
    }
    for (size_t i = 0; e >= 0 && i < d->spec.n_user_ids; i++)
        e = registry_image_permission_add(r->reg, id, REGISTRY_PERMISSION_USER,
                                          d->spec.user_ids[i]);
    if (e >= 0 && d->spec.is_public)
        e = registry_image_permission_add(r->reg, id, REGISTRY_PERMISSION_GROUP, "all");
    if (e >= 0 && d->spec.deprecate_at && img->deprecation_time != d->spec.deprecate_at) {
        struct registry_image_update u = {.set = IMAGE_SET_DEPRECATION,
                                          .deprecation_time = d->spec.deprecate_at};
        e = registry_image_update(r->reg, id, &u);
    }
    for (size_t i = 0; e >= 0 && i < d->spec.n_tags; i++)
        e = registry_tag_set(r->reg, id, d->spec.tags[i].key, d->spec.tags[i].value);
    for (size_t k = 0; e >= 0 && k < img->n_devices; k++) {
        const char *sid = img->devices[k].snapshot_id;
        for (size_t i = 0; sid[0] && e >= 0 && i < d->spec.n_snapshot_tags; i++)
            e = registry_tag_set(r->reg, sid, d->spec.snapshot_tags[i].key,
                                 d->spec.snapshot_tags[i].value);
    }
    registry_image_free(img);
    e = registry_end(r->reg, e);
    return e < 0 ? e : 0;
}

/* Publish region i's image (apply) and mark the region done. */
static int publish(struct dist *d, size_t i)
{
    struct registry_bake_output *out = &d->outs[i];
    int e = apply(d, d->regions[i], out->image_id);

    if (e < 0)
        return fail_region(d, i, e);
    out->state = BAKE_OUTPUT_DONE;
    out->error[0] = '\0';
    e = save(d, i);
    if (e < 0)
        return e;
    if (out->started)
        say(d, "%s: %s published (%.1f s)", out->region, out->image_id,
            (double)(wall_clock_ms() - out->started) / 1000);
    else
        say(d, "%s: %s published", out->region, out->image_id);
    return 0;
}

/* A copy that failed in region r (image `failed`, made by this build):
 * deregister it and delete its snapshots (in `error`), so that its name is
 * free for the next attempt.  Anything else is left alone. */
static int discard_failed_copy(struct dist *d, struct region *r, const char *id)
{
    struct registry_image *img = NULL;
    struct registry_image_update u = {.set = IMAGE_SET_STATE, .state = IMAGE_DEREGISTERED};
    int e = registry_image_get(r->reg, id, &img);

    if (e == -ENOENT) {
        error_clear();
        return 0;
    }
    if (e < 0)
        return e;
    if (img->state != IMAGE_FAILED || strcmp(img->owner, d->build.owner) != 0 ||
        strcmp(img->source_image_id, d->rec.image_id) != 0) {
        registry_image_free(img);
        return 0;
    }
    e = registry_begin(r->reg);
    if (e >= 0)
        e = registry_image_update(r->reg, id, &u);
    for (size_t k = 0; e >= 0 && k < img->n_devices; k++) {
        struct registry_snapshot *s = NULL;
        size_t users = 0;
        const char *sid = img->devices[k].snapshot_id;
        if (!sid[0])
            continue;
        e = registry_snapshot_get(r->reg, sid, &s);
        if (e == -ENOENT) {
            error_clear();
            e = 0;
            continue;
        }
        if (e >= 0 && s->state == SNAPSHOT_ERROR)
            e = registry_snapshot_in_use_by_images(r->reg, sid, &users);
        if (e >= 0 && s->state == SNAPSHOT_ERROR && users == 0)
            e = service_snapshot_delete(r, sid);
        registry_snapshot_free(s);
    }
    e = registry_end(r->reg, e);
    if (e >= 0)
        say(d, "%s: deregistered the failed copy %s", r->name, id);
    registry_image_free(img);
    return e < 0 ? e : 0;
}

static void copy_token(struct dist *d, size_t i, char *buf, size_t size)
{
    snprintf(buf, size, "kiln-bake:%s:%u", d->build.id, d->outs[i].attempts);
}

/* Start (or adopt, after a crash) the copy of attempt outs[i].attempts. */
static int start_copy(struct dist *d, size_t i)
{
    struct registry_bake_output *out = &d->outs[i];
    struct region *dst = d->regions[i];
    struct registry_client_token rec;
    struct service_client_token token = {.account = d->build.owner, .action = TOKEN_ACTION};
    struct service_image_copy_options co = {
        .owner = d->build.owner,
        .name = d->source->name,
        .description = d->source->description,
        .image_tags = d->spec.tags,
        .n_image_tags = d->spec.n_tags,
        .snapshot_tags = d->spec.snapshot_tags,
        .n_snapshot_tags = d->spec.n_snapshot_tags,
        .token = &token,
    };
    char tok[CLIENT_TOKEN_MAX + 1], id[ID_MAX_SIZE];
    _cleanup_free_ char *params = NULL;
    bool adopted = false;
    int e;

    copy_token(d, i, tok, sizeof(tok));
    token.token = tok;
    params = xasprintf("%s%c%s%c%s", d->build.id, 0, out->region, 0, d->rec.image_id);
    sha256(params, strlen(d->build.id) + strlen(out->region) + strlen(d->rec.image_id) + 2,
           &token.params);

    e = registry_client_token_get(dst->reg, d->build.owner, tok, &rec);
    if (e == -ENOENT) {
        error_clear();
        e = service_image_copy_start(d->home, d->rec.image_id, dst, &co, id);
        if (e == -EALREADY) { /* a concurrent distribute of this build won */
            error_clear();
            e = registry_client_token_get(dst->reg, d->build.owner, tok, &rec);
        } else if (e >= 0) {
            memcpy(rec.resource_id, id, ID_MAX_SIZE);
        }
    } else if (e >= 0) {
        adopted = true;
    }
    if (e < 0)
        return fail_region(d, i, e);
    if (!id_is_valid("ami", rec.resource_id)) {
        e = error_set(EBADMSG, "client token '%s' of region '%s' names no image", tok, out->region);
        return fail_region(d, i, e);
    }
    snprintf(out->image_id, sizeof(out->image_id), "%s", rec.resource_id);
    e = save(d, i);
    if (e < 0)
        return e;
    say(d, "%s: %s %s as %s (attempt %u)", out->region,
        adopted ? "resuming the copy of" : "copying", d->rec.image_id, out->image_id,
        out->attempts);
    d->waiting[i] = true;
    d->n_waiting++;
    return 0;
}

/* A new attempt at region i: counted and committed before the copy. */
static int new_attempt(struct dist *d, size_t i)
{
    struct registry_bake_output *out = &d->outs[i];
    int e;

    if (out->image_id[0]) {
        e = discard_failed_copy(d, d->regions[i], out->image_id);
        if (e < 0)
            return fail_region(d, i, e);
    }
    out->attempts++;
    out->state = BAKE_OUTPUT_COPYING;
    out->image_id[0] = '\0';
    out->error[0] = '\0';
    out->started = wall_clock_ms();
    e = save(d, i);
    if (e < 0)
        return e;
    return start_copy(d, i);
}

/* The state of image `id` in region r: >= 0 an enum image_state, -ENOENT
 * gone, or -errno. */
static int image_state(struct region *r, const char *id, char *reason, size_t size)
{
    struct registry_image *img = NULL;
    int e = registry_image_get(r->reg, id, &img);

    if (e < 0)
        return e;
    e = (int)img->state;
    if (reason)
        snprintf(reason, size, "%s", img->state_reason_message ? img->state_reason_message : "");
    registry_image_free(img);
    return e;
}

/* Phase one for a copy region: resume what a previous run left, or start. */
static int begin_region(struct dist *d, size_t i)
{
    struct registry_bake_output *out = &d->outs[i];
    char reason[512] = "";
    int e = region_open(d->o->data_dir, out->region, false, &d->regions[i]);

    if (e < 0)
        return fail_region(d, i, e);
    if (out->state == BAKE_OUTPUT_COPYING && !out->image_id[0]) {
        /* Killed between counting the attempt and recording the copy:
         * the token says whether the copy was accepted. */
        return start_copy(d, i);
    }
    if (out->image_id[0]) {
        /* A copy of an earlier run (`copying`, or `failed` after it): it
         * may have finished, still run, or have failed since. */
        e = image_state(d->regions[i], out->image_id, reason, sizeof(reason));
        if (e == IMAGE_AVAILABLE)
            return publish(d, i);
        if (e == IMAGE_PENDING) {
            say(d, "%s: waiting for the copy %s (attempt %u)", out->region, out->image_id,
                out->attempts);
            d->waiting[i] = true;
            d->n_waiting++;
            return 0;
        }
        if (e == IMAGE_FAILED)
            say(d, "%s: the copy %s (attempt %u) failed: %s", out->region, out->image_id,
                out->attempts, reason[0] ? reason : "no reason recorded");
        else if (e < 0 && e != -ENOENT)
            return fail_region(d, i, e);
        error_clear(); /* failed, gone or deregistered: copy again */
    }
    return new_attempt(d, i);
}

/* ---- waiting for the copies ---- */

static void lock_try(struct dist *d)
{
    _cleanup_free_ char *path = NULL;
    int fd;

    if (d->lock_fd >= 0)
        return;
    path = xasprintf("%s/jobs.lock", d->o->data_dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (!d->lock_seen_held)
            say(d, "a job runner (kiln serve) holds '%s': it runs the copies", path);
        d->lock_seen_held = true;
        close(fd);
        return;
    }
    d->lock_fd = fd;
}

/* Look at the copy of region i: publish it when available, fail the region
 * when the copy failed or is gone, leave it waiting when pending. */
static int check_copy(struct dist *d, size_t i)
{
    struct registry_bake_output *out = &d->outs[i];
    char reason[512] = "";
    int e = image_state(d->regions[i], out->image_id, reason, sizeof(reason));

    if (e == IMAGE_PENDING)
        return 0;
    d->waiting[i] = false;
    d->n_waiting--;
    if (e == IMAGE_AVAILABLE)
        return publish(d, i);
    if (e == -ENOENT)
        e = error_set(ENOENT, "the copy '%s' is gone from region '%s'", out->image_id, out->region);
    else if (e >= 0)
        e = error_set(EIO, "the copy '%s' is %s%s%s", out->image_id,
                      image_state_to_string((enum image_state)e), reason[0] ? ": " : "", reason);
    return fail_region(d, i, e);
}

/* Run the copy job of region i in this process (we hold DATA/jobs.lock). */
static void run_job(struct dist *d, size_t i)
{
    struct copy_stats st = {0};
    int e = service_job_run(d->regions[i], d->outs[i].image_id, &d->stop, 0, &st);

    if (e == 0 && st.chunks_copied + st.chunks_present > 0) {
        char b1[32], b2[32];
        say(d, "%s: copied %s in %llu chunks, %s already there", d->outs[i].region,
            format_bytes(st.bytes_copied, b1, sizeof(b1)), (unsigned long long)st.chunks_copied,
            format_bytes(st.bytes_present, b2, sizeof(b2)));
    }
    /* 1 (failed: the rows say why), -ENOENT (someone else finished it),
     * -EBUSY (a gc: later), -ECANCELED (the deadline): check_copy() reads
     * the outcome from the rows. */
    error_clear();
}

struct watchdog {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    uint64_t deadline_ns;
    atomic_bool *stop;
};

static void *watchdog_main(void *arg)
{
    struct watchdog *w = arg;

    pthread_mutex_lock(&w->lock);
    while (!w->done) {
        struct timespec ts = {.tv_sec = (time_t)(w->deadline_ns / 1000000000ull),
                              .tv_nsec = (long)(w->deadline_ns % 1000000000ull)};
        if (now_ns() >= w->deadline_ns) {
            atomic_store(w->stop, true);
            break;
        }
        pthread_cond_timedwait(&w->cond, &w->lock, &ts);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static int watchdog_start(struct watchdog *w, uint64_t deadline_ns, atomic_bool *stop)
{
    pthread_condattr_t ca;
    int e;

    memset(w, 0, sizeof(*w));
    w->deadline_ns = deadline_ns;
    w->stop = stop;
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* now_ns()'s clock */
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    e = pthread_create(&w->thread, NULL, watchdog_main, w);
    if (e != 0) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        return error_set(e, "cannot start a thread: %s", strerror(e));
    }
    return 0;
}

static void watchdog_stop(struct watchdog *w)
{
    pthread_mutex_lock(&w->lock);
    w->done = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}

static int wait_copies(struct dist *d, int timeout_s)
{
    uint64_t deadline = now_ns() + (uint64_t)timeout_s * 1000000000ull;
    struct watchdog w;
    int e = watchdog_start(&w, deadline, &d->stop);

    if (e < 0)
        return e;
    while (d->n_waiting > 0) {
        lock_try(d);
        for (size_t i = 0; i < d->n_outs && e >= 0; i++) {
            if (!d->waiting[i])
                continue;
            if (d->lock_fd >= 0 && !atomic_load(&d->stop))
                run_job(d, i);
            e = check_copy(d, i);
        }
        if (e < 0 || d->n_waiting == 0 || now_ns() >= deadline)
            break;
        if (d->lock_fd < 0)
            service_jobs_notify(); /* this process's runner, if it has one */
        {
            uint64_t left = deadline - now_ns();
            uint64_t nap = (uint64_t)POLL_MS * 1000000ull;
            struct timespec ts;
            if (left < nap)
                nap = left;
            ts.tv_sec = (time_t)(nap / 1000000000ull);
            ts.tv_nsec = (long)(nap % 1000000000ull);
            nanosleep(&ts, NULL);
        }
    }
    watchdog_stop(&w);
    if (e < 0)
        return e;
    /* What is still pending at the deadline stays `copying`. */
    for (size_t i = 0; i < d->n_outs; i++) {
        struct registry_bake_output *out = &d->outs[i];
        if (!d->waiting[i])
            continue;
        if (d->lock_fd >= 0)
            snprintf(out->error, sizeof(out->error),
                     "the copy %s was stopped after %d s; it resumes at the next `kiln bake "
                     "distribute` (or in a `kiln serve` serving region '%s')",
                     out->image_id, timeout_s, out->region);
        else
            snprintf(out->error, sizeof(out->error),
                     "the copy %s is still pending after %d s; the job runner holding "
                     "DATA/jobs.lock (a `kiln serve`) runs it only if it serves region '%s' "
                     "(--regions); the next `kiln bake distribute` picks it up",
                     out->image_id, timeout_s, out->region);
        say(d, "%s: %s", out->region, out->error);
        e = save(d, i);
        if (e < 0)
            return e;
        d->n_timed_out++;
    }
    return 0;
}

static int load(struct dist *d)
{
    const struct bake_distribute_options *o = d->o;
    struct region *probe = NULL;
    int e;

    if (!o->data_dir || !o->build_id)
        return error_set(EINVAL, "bake_distribute: data_dir and build_id are required");
    if (!o->region || !region_name_is_valid(o->region))
        return error_set(EINVAL, "invalid region name '%.64s'", o->region ? o->region : "");
    if (o->timeout_s < 0)
        return error_set(EINVAL, "negative timeout %d", o->timeout_s);
    /* Read-only first: a region that does not exist is an error, not a
     * region to create. */
    e = region_open(o->data_dir, o->region, true, &probe);
    region_free(probe);
    if (e < 0)
        return e;
    e = region_open(o->data_dir, o->region, false, &d->home);
    if (e < 0)
        return e;
    e = registry_bake_build_get(d->home->reg, o->build_id, &d->build);
    if (e == -ENOENT)
        return error_set(ENOENT, "build '%s' does not exist in region '%s'", o->build_id,
                         o->region);
    if (e < 0)
        return e;
    if (d->build.state == BAKE_BUILD_FAILED || d->build.state == BAKE_BUILD_CLEANED)
        return error_set(EINVAL, "build '%s' is %s: it has no image to distribute", o->build_id,
                         registry_bake_state_to_string(d->build.state));
    e = registry_bake_distribution_get(d->home->reg, o->build_id, &d->rec);
    if (e < 0)
        return e;
    e = bake_distribution_spec_parse(d->rec.spec, strlen(d->rec.spec), &d->spec);
    if (e < 0) {
        _cleanup_free_ char *why = xstrdup(error_message() ? error_message() : "");
        return error_set(e, "build '%s': %s", o->build_id, why);
    }
    e = registry_bake_output_list(d->home->reg, o->build_id, &d->outs, &d->n_outs);
    if (e < 0)
        return e;
    if (d->n_outs == 0 || strcmp(d->outs[0].region, d->home->name) != 0)
        return error_set(EBADMSG, "the outputs of build '%s' do not start with its region '%s'",
                         o->build_id, d->home->name);
    e = registry_image_get(d->home->reg, d->rec.image_id, &d->source);
    if (e == -ENOENT)
        return error_set(ENOENT, "the image '%s' of build '%s' does not exist in region '%s'",
                         d->rec.image_id, o->build_id, o->region);
    if (e < 0)
        return e;
    if (d->source->state != IMAGE_AVAILABLE)
        return error_set(EINVAL, "the image '%s' of build '%s' is %s, not available",
                         d->rec.image_id, o->build_id, image_state_to_string(d->source->state));
    return 0;
}

int bake_distribute(const struct bake_distribute_options *o)
{
    struct dist d = {.o = o, .lock_fd = -1};
    int timeout_s = o->timeout_s > 0 ? o->timeout_s : BAKE_DISTRIBUTE_TIMEOUT_DEFAULT;
    size_t n_done = 0;
    int e;

    atomic_init(&d.stop, false);
    e = load(&d);
    if (e < 0)
        goto out;
    d.regions = xcalloc(d.n_outs, sizeof(*d.regions));
    d.waiting = xcalloc(d.n_outs, sizeof(*d.waiting));
    d.regions[0] = d.home;

    for (size_t i = 0; i < d.n_outs && e >= 0; i++) {
        if (d.outs[i].state == BAKE_OUTPUT_DONE)
            continue;
        error_clear();
        e = i == 0 ? publish(&d, 0) : begin_region(&d, i);
    }
    if (e >= 0 && d.n_waiting > 0)
        e = wait_copies(&d, timeout_s);
    if (e < 0)
        goto out; /* the build region's registry failed us */

    for (size_t i = 0; i < d.n_outs; i++)
        n_done += d.outs[i].state == BAKE_OUTPUT_DONE;
    if (d.n_failed > 0)
        e = error_set(d.first_err, "build '%s': distribution failed in %zu of %zu regions: %s",
                      d.build.id, d.n_failed, d.n_outs, d.failures.data);
    else if (d.n_timed_out > 0)
        e = error_set(ETIMEDOUT, "build '%s': %zu of %zu regions still copying after %d s",
                      d.build.id, d.n_timed_out, d.n_outs, timeout_s);
    else
        e = 0;
    say(&d, "%zu of %zu regions done", n_done, d.n_outs);
out:
    if (d.lock_fd >= 0)
        close(d.lock_fd);
    for (size_t i = 1; d.regions && i < d.n_outs; i++)
        region_free(d.regions[i]);
    free(d.regions);
    free(d.waiting);
    free(d.outs);
    registry_image_free(d.source);
    bake_distribution_spec_release(&d.spec);
    registry_bake_distribution_release(&d.rec);
    region_free(d.home);
    strbuf_release(&d.failures);
    return e;
}

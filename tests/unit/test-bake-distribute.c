/* Distribution of a build's image (src/bake/distribute.[ch]) over a
 * temporary data directory with real regions: an image imported with
 * service_image_import(), a build begun with bake_journal_begin(), its
 * distribution recorded from a parsed template, then bake_distribute():
 *
 *  - bad input to the record is refused naming the place, nothing written;
 *  - the copy exists in the other region, available, with the launch
 *    permissions, the deprecation time and the tags (snapshot tags on the
 *    copied snapshot), and so does the build's own image;
 *  - a region that cannot be opened fails alone, is recorded `failed`, and
 *    the next distribute retries only it (the copy done is not redone);
 *  - with DATA/jobs.lock held by someone else the copy waits and times out
 *    (`copying` kept); a later call resumes the same copy;
 *  - a job runner of this process (what `kiln serve` has) runs the copy;
 *  - a copy accepted before a crash is adopted through its client token;
 *  - a copy that fails (a damaged source chunk) fails its region; once the
 *    chunk is mended the retry deregisters it and copies again (attempt 2);
 *  - block public access in a region fails that region with EC2's reason.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "bake/distribute.h"
#include "bake/journal.h"
#include "bake/template.h"
#include "common/error.h"
#include "registry/images.h"
#include "registry/jobs.h"
#include "service-util.h"
#include "service/service.h"
#include "tap.h"

#define OWNER "123456789012"
#define USER "111122223333"
#define HOME "us-east-1"
#define DISK_SIZE (1u << 20)
#define DAY_MS (24LL * 3600 * 1000)

static char tmpdir[] = "/tmp/kiln-test-bake-distribute.XXXXXX";

/* A TAP comment: every line prefixed with "# ". */
static void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void diag(const char *fmt, ...)
{
    char buf[65536];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    for (char *line = buf, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        printf("# %s\n", line);
    }
}

static const char template_fmt[] =
    "{\"schema\": \"kiln-bake/1\", \"name\": \"web\","
    " \"source\": {\"image_id\": \"ami-0123456789abcdef0\"},"
    " \"steps\": [{\"type\": \"mkdir\", \"path\": \"/srv\"}],"
    " \"output\": {\"name\": \"web 1\", \"tags\": {\"app\": \"web\"}, \"snapshot_tags\": "
    "{\"layer\": \"root\"}},"
    " \"distribution\": {\"regions\": [%s],"
    "   \"launch_permission\": {\"user_ids\": [\"" USER "\"], \"groups\": [%s]},"
    "   \"deprecate_after\": \"30d\"}}";

static struct bake_template *load_template(const char *regions, const char *groups)
{
    struct bake_template *t = NULL;
    char text[2048];
    int n = snprintf(text, sizeof(text), template_fmt, regions, groups);

    if (bake_template_parse(text, (size_t)n, &t) < 0) {
        diag("template: %s", error_message());
        return NULL;
    }
    return t;
}

/* Replace string *slot (a template's) with s. */
static void set_str(char **slot, const char *s)
{
    free(*slot);
    *slot = strdup(s);
}

static char logbuf[65536];

static void log_line(void *ud, const char *line)
{
    (void)ud;
    if (strlen(logbuf) + strlen(line) + 2 < sizeof(logbuf)) {
        strcat(logbuf, line);
        strcat(logbuf, "\n");
    }
}

static int distribute(const char *build, int timeout_s)
{
    struct bake_distribute_options o = {.data_dir = tmpdir,
                                        .region = HOME,
                                        .build_id = build,
                                        .log = log_line,
                                        .timeout_s = timeout_s};
    logbuf[0] = '\0';
    error_clear();
    return bake_distribute(&o);
}

static int outputs(struct region *home, const char *build, struct registry_bake_output **ret,
                   size_t *ret_n)
{
    return registry_bake_output_list(home->reg, build, ret, ret_n);
}

static const struct registry_bake_output *find_out(const struct registry_bake_output *o, size_t n,
                                                   const char *region)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(o[i].region, region) == 0)
            return &o[i];
    return NULL;
}

static bool has_tag(const struct registry_tag *t, size_t n, const char *k, const char *v)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].key, k) == 0 && strcmp(t[i].value, v) == 0)
            return true;
    return false;
}

static bool has_permission(const struct registry_image *img, enum registry_permission_kind kind,
                           const char *value)
{
    for (size_t i = 0; i < img->n_permissions; i++)
        if (img->permissions[i].kind == kind && strcmp(img->permissions[i].value, value) == 0)
            return true;
    return false;
}

/* The image of region `name` is published as the template says. */
static void check_published(const char *name, const char *id, int64_t deprecate_at, bool public)
{
    struct region *r = NULL;
    struct registry_image *img = NULL;
    struct registry_tag *tags = NULL;
    size_t n_tags = 0;

    if (region_open(tmpdir, name, true, &r) < 0 || registry_image_get(r->reg, id, &img) < 0) {
        ok(false, "%s: image %s readable: %s", name, id, error_message());
        region_free(r);
        return;
    }
    is_int(img->state, IMAGE_AVAILABLE, "%s: %s is available", name, id);
    is_str(img->owner, OWNER, "%s: owned by the build's owner", name);
    ok(has_permission(img, REGISTRY_PERMISSION_USER, USER), "%s: launch permission for " USER,
       name);
    is_int(img->is_public, public, "%s: public as the template says", name);
    ok(img->deprecation_time == deprecate_at, "%s: deprecation time %lld (want %lld)", name,
       (long long)img->deprecation_time, (long long)deprecate_at);
    ok(has_tag(img->tags, img->n_tags, "app", "web"), "%s: image tag app=web", name);
    ok(img->n_devices == 1 && img->devices[0].snapshot_id[0], "%s: one mapped snapshot", name);
    if (img->n_devices == 1 &&
        registry_tag_list(r->reg, img->devices[0].snapshot_id, &tags, &n_tags) == 0)
        ok(has_tag(tags, n_tags, "layer", "root"), "%s: snapshot tag layer=root on %s", name,
           img->devices[0].snapshot_id);
    registry_tag_list_free(tags, n_tags);
    registry_image_free(img);
    region_free(r);
}

/* How many images (any state) region `name` holds; -1 on error. */
static int count_images(const char *name, enum image_state *states, size_t n_states)
{
    struct region *r = NULL;
    struct registry_image **list = NULL;
    struct image_query q = {.include_deprecated = true,
                            .include_disabled = true,
                            .states = states,
                            .n_states = n_states};
    char *next = NULL;
    size_t n = 0;
    int e = region_open(tmpdir, name, true, &r);

    if (e == 0)
        e = registry_image_list(r->reg, &q, &list, &n, &next);
    registry_image_list_free(list, n);
    free(next);
    region_free(r);
    return e < 0 ? -1 : (int)n;
}

static int hold_jobs_lock(void)
{
    char path[600];
    int fd;

    snprintf(path, sizeof(path), "%s/jobs.lock", tmpdir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int new_build(struct region *home, char id[ID_MAX_SIZE])
{
    struct digest dg;

    sha256("template", 8, &dg);
    return bake_journal_begin(home->reg, OWNER, &dg, NULL, id);
}

static int record(struct region *home, const char *build, const char *ami, const char *regions,
                  const char *groups)
{
    struct bake_template *t = load_template(regions, groups);
    int e;

    if (!t)
        return -EINVAL;
    e = bake_distribution_record(home->reg, build, HOME, ami, t);
    bake_template_free(t);
    return e;
}

static void test_record_refusals(struct region *home, const char *ami)
{
    struct bake_template *t = load_template("\"us-west-2\", \"eu-north-1\"", "\"all\"");
    struct registry_bake_distribution d;
    char build[ID_MAX_SIZE];
    int e;

    ok(t != NULL, "the template parses");
    if (!t)
        return;
    is_int(new_build(home, build), 0, "begin a build");

    set_str(&t->distribution.regions.items[1], "Eu_North");
    e = bake_distribution_record(home->reg, build, HOME, ami, t);
    is_int(e, -EINVAL, "an invalid region name is refused");
    ok(e < 0 && strstr(error_message(), "distribution.regions[1]: invalid region name 'Eu_North'"),
       "naming the place: %s", error_message());
    set_str(&t->distribution.regions.items[1], "us-west-2");
    e = bake_distribution_record(home->reg, build, HOME, ami, t);
    ok(e == -EINVAL && strstr(error_message(), "regions[1]: region 'us-west-2' is named twice"),
       "a region named twice is refused: %s", error_message());
    set_str(&t->distribution.regions.items[1], "eu-north-1");

    set_str(&t->distribution.user_ids.items[0], "12345");
    e = bake_distribution_record(home->reg, build, HOME, ami, t);
    ok(e == -EINVAL && strstr(error_message(), "user_ids[0]: '12345' is not a 12-digit account"),
       "a malformed account id is refused: %s", error_message());
    set_str(&t->distribution.user_ids.items[0], USER);

    set_str(&t->output.tags.items[0].key, "aws:app");
    e = bake_distribution_record(home->reg, build, HOME, ami, t);
    ok(e == -EINVAL && strstr(error_message(), "output.tags.aws:app: tag keys starting with"),
       "a reserved tag key is refused: %s", error_message());
    set_str(&t->output.tags.items[0].key, "app");

    e = bake_distribution_record(home->reg, build, HOME, "ami-123", t);
    is_int(e, -EINVAL, "a malformed image id is refused");
    e = bake_distribution_record(home->reg, "bld-00000000000000001", HOME, ami, t);
    is_int(e, -ENOENT, "an unknown build is -ENOENT");

    e = registry_bake_distribution_get(home->reg, build, &d);
    is_int(e, -ENOENT, "nothing was recorded by the refusals");
    e = distribute(build, 10);
    ok(e == -ENOENT && strstr(error_message(), "no distribution recorded"),
       "distribute of a build with nothing recorded: %s", error_message());
    bake_template_free(t);
}

/* The spec reader: what the writer makes reads back; refusals say why. */
static void test_spec(void)
{
    static const char full[] =
        "{\"version\":1,\"user_ids\":[\"111122223333\"],\"groups\":[\"all\"],"
        "\"deprecate_at\":1767225600000,\"deprecate_after_s\":2592000,"
        "\"tags\":{\"app\":\"w\\\"eb\"},\"snapshot_tags\":{\"layer\":\"root\"}}";
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"{\"version\":2,\"user_ids\":[],\"groups\":[],\"deprecate_at\":0,"
         "\"deprecate_after_s\":0,\"tags\":{},\"snapshot_tags\":{}}",
         "not version 1"},
        {"{\"version\":1,\"user_ids\":[\"12345\"],\"groups\":[],\"deprecate_at\":0,"
         "\"deprecate_after_s\":0,\"tags\":{},\"snapshot_tags\":{}}",
         "not a 12-digit account id"},
        {"{\"version\":1,\"user_ids\":[],\"groups\":[\"everyone\"],\"deprecate_at\":0,"
         "\"deprecate_after_s\":0,\"tags\":{},\"snapshot_tags\":{}}",
         "groups is not"},
        {"{\"version\":1,\"user_ids\":[],\"groups\":[],\"deprecate_at\":-1,"
         "\"deprecate_after_s\":0,\"tags\":{},\"snapshot_tags\":{}}",
         "is not an integer >= 0"},
        {"{\"version\":1,\"user_ids\":[],\"groups\":[],\"deprecate_at\":0,"
         "\"deprecate_after_s\":0,\"tags\":{\"aws:x\":\"y\"},\"snapshot_tags\":{}}",
         "tags.aws:x: tag keys starting with 'aws:' are reserved"},
        {"{\"version\":1,\"user_ids\":[],\"groups\":[],\"deprecate_at\":0,"
         "\"deprecate_after_s\":0,\"tags\":{},\"snapshot_tags\":{\"k\":1}}",
         "snapshot_tags.k is not a string"},
        {"{\"version\":1,\"user_ids\":[],\"groups\":[],\"deprecate_at\":0,"
         "\"deprecate_after_s\":0,\"tags\":{},\"snapshot_tags\":{},\"x\":1}",
         "unknown key 'x'"},
        {"{\"version\":1,", "malformed distribution spec"},
        {"[]", "not an object"},
    };
    struct bake_distribution_spec sp = {0};
    char *text = NULL;
    int e = bake_distribution_spec_parse(full, strlen(full), &sp);

    is_int(e, 0, "a spec reads");
    if (e == 0) {
        ok(sp.n_user_ids == 1 && strcmp(sp.user_ids[0], USER) == 0, "its account");
        ok(sp.is_public, "public");
        ok(sp.deprecate_at == 1767225600000LL && sp.deprecate_after_s == 2592000,
           "its deprecation");
        ok(sp.n_tags == 1 && strcmp(sp.tags[0].value, "w\"eb") == 0, "its tag, unescaped");
        is_int(bake_distribution_spec_write(&sp, &text), 0, "and writes");
        is_str(text, full, "the same text");
    }
    free(text);
    bake_distribution_spec_release(&sp);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        error_clear();
        e = bake_distribution_spec_parse(bad[i].text, strlen(bad[i].text), &sp);
        ok(e == -EBADMSG && error_message() && strstr(error_message(), bad[i].why),
           "refused, %s: %s", bad[i].why, error_message() ? error_message() : "(none)");
    }
}

int main(void)
{
    struct service_image_import_options io = {
        .name = "web 1", .owner = OWNER, .format = IMAGE_FORMAT_RAW};
    struct region *home = NULL;
    struct registry_bake_output *outs = NULL;
    struct registry_bake_distribution rec = {0};
    const struct registry_bake_output *o;
    char path[600], block[600], ami[ID_MAX_SIZE], snap[ID_MAX_SIZE], build[ID_MAX_SIZE];
    char west_copy[ID_MAX_SIZE] = "";
    uint8_t *data = malloc(DISK_SIZE);
    int64_t before, deprecate_at = 0;
    size_t n = 0;
    int e, fd;

    if (!mkdtemp(tmpdir) || !data) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/disk.raw", tmpdir);
    test_fill(data, DISK_SIZE, 11);
    ok(test_disk_write(path, data, DISK_SIZE) == 0, "wrote a 1 MiB raw disk");
    ok(region_open(tmpdir, HOME, false, &home) == 0, "opened " HOME);
    e = service_image_import(home, path, &io, ami, snap);
    is_int(e, 0, "imported image %s", ami);

    test_spec();
    test_record_refusals(home, ami);

    /* ---- record, then a first distribute with eu-north-1 blocked ---- */
    is_int(new_build(home, build), 0, "begin build %s", build);
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        before = (int64_t)ts.tv_sec * 1000;
    }
    e = record(home, build, ami, "\"us-west-2\", \"us-east-1\", \"eu-north-1\"", "\"all\"");
    is_int(e, 0, "recorded the distribution (the build's region named too)");
    is_int(record(home, build, ami, "\"us-west-2\"", ""), -EEXIST, "recording twice is -EEXIST");
    e = registry_bake_distribution_get(home->reg, build, &rec);
    is_int(e, 0, "the record reads back");
    if (e == 0) {
        is_str(rec.name, "web", "name");
        is_str(rec.region, HOME, "region");
        is_str(rec.image_id, ami, "image");
        ok(strstr(rec.spec, "\"deprecate_after_s\":2592000") != NULL, "spec: %s", rec.spec);
        const char *p = strstr(rec.spec, "\"deprecate_at\":");
        if (p)
            deprecate_at = strtoll(p + 15, NULL, 10);
        ok(deprecate_at >= before + 30 * DAY_MS - 60000 &&
               deprecate_at <= before + 30 * DAY_MS + 120000 && deprecate_at % 60000 == 0,
           "deprecation fixed at record time, 30 days on, on a minute (%lld)",
           (long long)deprecate_at);
    }
    registry_bake_distribution_release(&rec);
    e = outputs(home, build, &outs, &n);
    ok(e == 0 && n == 3, "three output regions (%zu)", n);
    if (e == 0 && n == 3) {
        is_str(outs[0].region, HOME, "the build's region first");
        is_str(outs[0].image_id, ami, "with the build's image");
        is_str(outs[1].region, "us-west-2", "then us-west-2");
        is_str(outs[2].region, "eu-north-1", "then eu-north-1 (the home region not twice)");
        ok(outs[1].state == BAKE_OUTPUT_PENDING && outs[2].state == BAKE_OUTPUT_PENDING,
           "all pending");
    }
    free(outs);

    /* A file where eu-north-1's directory would go: that region cannot
     * be created. */
    snprintf(block, sizeof(block), "%s/regions/eu-north-1", tmpdir);
    ok(test_disk_write(block, (const uint8_t *)"x", 1) == 0, "blocked eu-north-1 with a file");
    e = distribute(build, 600);
    ok(e < 0, "the distribute fails (%d)", e);
    ok(e < 0 && strstr(error_message(), "failed in 1 of 3 regions: eu-north-1: "),
       "naming the region: %s", error_message());
    diag("log:\n%s", logbuf);
    e = outputs(home, build, &outs, &n);
    o = e == 0 ? find_out(outs, n, HOME) : NULL;
    ok(o && o->state == BAKE_OUTPUT_DONE, HOME " is done");
    o = e == 0 ? find_out(outs, n, "us-west-2") : NULL;
    ok(o && o->state == BAKE_OUTPUT_DONE && o->image_id[0] && strcmp(o->image_id, ami) != 0,
       "us-west-2 is done with a copy %s", o ? o->image_id : "?");
    if (o) {
        snprintf(west_copy, sizeof(west_copy), "%s", o->image_id);
        is_int(o->attempts, 1, "after one attempt");
    }
    o = e == 0 ? find_out(outs, n, "eu-north-1") : NULL;
    ok(o && o->state == BAKE_OUTPUT_FAILED && o->error[0], "eu-north-1 is failed: %s",
       o ? o->error : "?");
    free(outs);
    check_published(HOME, ami, deprecate_at, true);
    if (west_copy[0])
        check_published("us-west-2", west_copy, deprecate_at, true);
    {
        struct region *w = NULL;
        struct registry_image *img = NULL;
        if (region_open(tmpdir, "us-west-2", true, &w) == 0 &&
            registry_image_get(w->reg, west_copy, &img) == 0) {
            is_str(img->name, "web 1", "the copy has the image's name");
            is_str(img->source_image_id, ami, "and names its source");
        } else {
            ok(false, "read the copy");
        }
        registry_image_free(img);
        region_free(w);
    }
    fd = hold_jobs_lock();
    ok(fd >= 0, "DATA/jobs.lock is free again after the distribute");
    if (fd >= 0)
        close(fd);

    /* ---- the retry: only eu-north-1 ---- */
    ok(unlink(block) == 0, "unblocked eu-north-1");
    e = distribute(build, 600);
    is_int(e, 0, "the second distribute succeeds: %s", e ? error_message() : "");
    ok(!strstr(logbuf, "us-west-2:") && !strstr(logbuf, HOME ":"),
       "it did not touch the regions done");
    ok(strstr(logbuf, "eu-north-1: copying") != NULL, "it copied to eu-north-1");
    diag("log:\n%s", logbuf);
    e = outputs(home, build, &outs, &n);
    o = e == 0 ? find_out(outs, n, "us-west-2") : NULL;
    ok(o && strcmp(o->image_id, west_copy) == 0, "us-west-2 keeps its copy");
    o = e == 0 ? find_out(outs, n, "eu-north-1") : NULL;
    ok(o && o->state == BAKE_OUTPUT_DONE && !o->error[0], "eu-north-1 is done");
    if (o)
        check_published("eu-north-1", o->image_id, deprecate_at, true);
    free(outs);
    is_int(count_images("us-west-2", NULL, 0), 1, "us-west-2 holds one image: nothing recopied");
    is_int(distribute(build, 600), 0, "a third distribute has nothing to do");
    ok(strstr(logbuf, "3 of 3 regions done") != NULL, "and says so");

    /* ---- the lock held by another runner: wait, time out, resume ---- */
    is_int(new_build(home, build), 0, "begin build %s", build);
    is_int(record(home, build, ami, "\"ap-south-1\"", ""), 0, "record: ap-south-1, private");
    fd = hold_jobs_lock();
    ok(fd >= 0, "took DATA/jobs.lock as a kiln serve would");
    e = distribute(build, 1);
    ok(e == -ETIMEDOUT && strstr(error_message(), "1 of 2 regions still copying"),
       "the copy times out: %s", error_message());
    ok(strstr(logbuf, "runs it only if it serves region 'ap-south-1'") != NULL,
       "saying who is to run it");
    e = outputs(home, build, &outs, &n);
    o = e == 0 ? find_out(outs, n, "ap-south-1") : NULL;
    ok(o && o->state == BAKE_OUTPUT_COPYING && o->image_id[0] && o->error[0],
       "ap-south-1 stays copying with its image and the reason");
    snprintf(west_copy, sizeof(west_copy), "%s", o ? o->image_id : "");
    free(outs);
    if (fd >= 0)
        close(fd);
    e = distribute(build, 600);
    is_int(e, 0, "with the lock free, the next distribute finishes: %s", e ? error_message() : "");
    ok(strstr(logbuf, "ap-south-1: waiting for the copy") != NULL, "it waited for the same copy");
    e = outputs(home, build, &outs, &n);
    o = e == 0 ? find_out(outs, n, "ap-south-1") : NULL;
    ok(o && o->state == BAKE_OUTPUT_DONE && strcmp(o->image_id, west_copy) == 0 && o->attempts == 1,
       "done with the copy it started, one attempt");
    if (o)
        check_published("ap-south-1", o->image_id, deprecate_at, false);
    free(outs);

    /* ---- a job runner of this process runs the copy ---- */
    {
        const char *regions[] = {"sa-east-1"};
        struct job_runner_options jo = {
            .data_dir = tmpdir, .regions = regions, .n_regions = 1, .threads = 1};
        struct job_runner *jr = NULL;
        bool held = false;

        is_int(new_build(home, build), 0, "begin build %s", build);
        is_int(record(home, build, ami, "\"sa-east-1\"", ""), 0, "record: sa-east-1");
        is_int(job_runner_new(&jo, &jr), 0, "started a job runner for sa-east-1");
        for (int i = 0; i < 3000 && !held; i++) { /* until it holds the lock */
            fd = hold_jobs_lock();
            held = fd < 0;
            if (fd >= 0)
                close(fd);
            if (!held)
                usleep(10000);
        }
        ok(held, "the runner holds DATA/jobs.lock");
        e = distribute(build, 600);
        is_int(e, 0, "the runner ran the copy: %s", e ? error_message() : "");
        ok(strstr(logbuf, "holds") != NULL, "the distribute saw the runner's lock");
        job_runner_free(jr);
    }

    /* ---- a copy accepted before a crash is adopted ---- */
    {
        struct registry_bake_output row;
        struct region *dst = NULL;
        char tok[80], id[ID_MAX_SIZE] = "";
        struct service_client_token token = {
            .account = OWNER, .token = tok, .action = "kiln-bake-distribute"};
        struct service_image_copy_options co = {.owner = OWNER, .name = "web 1", .token = &token};

        is_int(new_build(home, build), 0, "begin build %s", build);
        is_int(record(home, build, ami, "\"me-south-1\"", ""), 0, "record: me-south-1");
        e = outputs(home, build, &outs, &n);
        ok(e == 0 && n == 2, "two outputs");
        row = outs[1];
        free(outs);
        /* What the killed process did: count the attempt, start the copy
         * with its token, and die before recording the copy's id. */
        row.state = BAKE_OUTPUT_COPYING;
        row.attempts = 1;
        row.started = 1;
        is_int(registry_bake_output_update(home->reg, &row, 1), 0, "row copying, attempt 1");
        snprintf(tok, sizeof(tok), "kiln-bake:%s:1", build);
        ok(region_open(tmpdir, "me-south-1", false, &dst) == 0, "opened me-south-1");
        e = dst ? service_image_copy_start(home, ami, dst, &co, id) : -1;
        is_int(e, 0, "the copy %s was accepted", id);
        region_free(dst);
        e = distribute(build, 600);
        is_int(e, 0, "distribute succeeds: %s", e ? error_message() : "");
        ok(strstr(logbuf, "resuming the copy of") != NULL, "it resumed the copy");
        e = outputs(home, build, &outs, &n);
        o = e == 0 ? find_out(outs, n, "me-south-1") : NULL;
        ok(o && o->state == BAKE_OUTPUT_DONE && strcmp(o->image_id, id) == 0,
           "done with the adopted copy %s", id);
        free(outs);
        is_int(count_images("me-south-1", NULL, 0), 1, "and no second copy");
    }

    /* ---- a copy that fails (a damaged source chunk) is recorded; once the
     * chunk is mended, the retry deregisters the failed copy and copies
     * again (attempt 2) ---- */
    {
        struct service_image_import_options io2 = {
            .name = "web 2", .owner = OWNER, .format = IMAGE_FORMAT_RAW};
        struct region *dst = NULL;
        struct registry_image *img = NULL;
        struct blockmap *m = NULL;
        char ami2[ID_MAX_SIZE], snap2[ID_MAX_SIZE], hex[DIGEST_HEX_SIZE], chunk[700];
        char failed_id[ID_MAX_SIZE] = "", failed_snap[ID_MAX_SIZE] = "", saved[8];
        enum image_state live[] = {IMAGE_AVAILABLE};
        bool damaged = false;

        test_fill(data, DISK_SIZE, 12);
        ok(test_disk_write(path, data, DISK_SIZE) == 0, "wrote a second disk");
        is_int(service_image_import(home, path, &io2, ami2, snap2), 0, "imported %s", ami2);
        if (service_snapshot_get(home, snap2, NULL, &m) == 0 && m->n > 0) {
            digest_to_hex(&m->ext[0].id, hex);
            snprintf(chunk, sizeof(chunk), "%s/regions/" HOME "/store/chunks/%.2s/%s", tmpdir, hex,
                     hex);
            fd = open(chunk, O_RDWR);
            damaged = fd >= 0 && pread(fd, saved, 8, 40) == 8 &&
                      pwrite(fd, "garbage!", 8, 40) == 8 && close(fd) == 0;
        }
        blockmap_free(m);
        ok(damaged, "damaged chunk %.12s of %s", hex, snap2);
        is_int(new_build(home, build), 0, "begin build %s", build);
        is_int(record(home, build, ami2, "\"af-south-1\"", ""), 0, "record: af-south-1");
        e = distribute(build, 600);
        ok(e < 0 && strstr(error_message(), "af-south-1: the copy 'ami-") &&
               strstr(error_message(), "corrupt"),
           "the copy fails, saying why: %s", error_message());
        e = outputs(home, build, &outs, &n);
        o = e == 0 ? find_out(outs, n, "af-south-1") : NULL;
        ok(o && o->state == BAKE_OUTPUT_FAILED && o->attempts == 1 && o->image_id[0],
           "af-south-1 is failed after one attempt, its copy named");
        if (o)
            snprintf(failed_id, sizeof(failed_id), "%s", o->image_id);
        free(outs);
        ok(region_open(tmpdir, "af-south-1", false, &dst) == 0, "opened af-south-1");
        if (dst && registry_image_get(dst->reg, failed_id, &img) == 0) {
            is_int(img->state, IMAGE_FAILED, "the copy is failed there");
            snprintf(failed_snap, sizeof(failed_snap), "%s", img->devices[0].snapshot_id);
        }
        registry_image_free(img);
        img = NULL;

        fd = open(chunk, O_WRONLY);
        ok(fd >= 0 && pwrite(fd, saved, 8, 40) == 8 && close(fd) == 0, "mended the chunk");
        e = distribute(build, 600);
        is_int(e, 0, "the retry copies again: %s", e ? error_message() : "");
        ok(strstr(logbuf, "(attempt 1) failed: ") != NULL, "saying why attempt 1 failed");
        ok(strstr(logbuf, "deregistered the failed copy") != NULL, "after discarding it");
        e = outputs(home, build, &outs, &n);
        o = e == 0 ? find_out(outs, n, "af-south-1") : NULL;
        ok(o && o->state == BAKE_OUTPUT_DONE && o->attempts == 2 &&
               strcmp(o->image_id, failed_id) != 0 && !o->error[0],
           "done at attempt 2 with a new copy");
        free(outs);
        if (dst && registry_image_get(dst->reg, failed_id, &img) == 0)
            is_int(img->state, IMAGE_DEREGISTERED, "the failed copy is deregistered");
        registry_image_free(img);
        {
            struct registry_snapshot *s = NULL;
            ok(dst && failed_snap[0] && registry_snapshot_get(dst->reg, failed_snap, &s) == -ENOENT,
               "its snapshot is deleted");
            registry_snapshot_free(s);
        }
        is_int(count_images("af-south-1", live, 1), 1, "one available image there");
        region_free(dst);
    }

    /* ---- block public access fails that region, with the reason ---- */
    {
        struct region *dst = NULL;

        is_int(new_build(home, build), 0, "begin build %s", build);
        is_int(record(home, build, ami, "\"ca-central-1\"", "\"all\""), 0,
               "record: ca-central-1, public");
        ok(region_open(tmpdir, "ca-central-1", false, &dst) == 0 &&
               registry_setting_set(dst->reg, "image-block-public-access:" OWNER,
                                    "block-new-sharing") == 0,
           "blocked public sharing in ca-central-1");
        e = distribute(build, 600);
        ok(e == -EACCES && strstr(error_message(), "block public access for AMIs is enabled"),
           "refused: %s", error_message());
        ok(dst &&
               registry_setting_set(dst->reg, "image-block-public-access:" OWNER, "unblocked") == 0,
           "unblocked it");
        e = distribute(build, 600);
        is_int(e, 0, "the retry publishes it: %s", e ? error_message() : "");
        region_free(dst);
    }

    /* ---- the output rows refuse what their state machine forbids ---- */
    e = outputs(home, build, &outs, &n);
    ok(e == 0 && n == 2 && outs[1].state == BAKE_OUTPUT_DONE, "the last build's rows");
    if (e == 0 && n == 2) {
        struct registry_bake_output row = outs[1];
        row.state = BAKE_OUTPUT_FAILED;
        e = registry_bake_output_update(home->reg, &row, 1);
        ok(e == -EINVAL && strstr(error_message(), "is done already"), "a done row is final: %s",
           error_message());
        snprintf(row.region, sizeof(row.region), "nowhere-9");
        is_int(registry_bake_output_update(home->reg, &row, 1), -ENOENT, "an unknown region");
        snprintf(row.region, sizeof(row.region), "Bad!");
        is_int(registry_bake_output_update(home->reg, &row, 1), -EINVAL, "a malformed region");
    }
    free(outs);
    {
        struct registry_bake_output row = {0};
        char b2[ID_MAX_SIZE];
        is_int(new_build(home, b2), 0, "begin build %s", b2);
        is_int(record(home, b2, ami, "\"eu-west-1\"", ""), 0, "record: eu-west-1");
        snprintf(row.build_id, sizeof(row.build_id), "%s", b2);
        snprintf(row.region, sizeof(row.region), "eu-west-1");
        row.state = BAKE_OUTPUT_DONE;
        e = registry_bake_output_update(home->reg, &row, 1);
        ok(e == -EINVAL && strstr(error_message(), "cannot be done without an image"),
           "done needs an image: %s", error_message());
        snprintf(row.image_id, sizeof(row.image_id), "snap-0123456789abcdef0");
        is_int(registry_bake_output_update(home->reg, &row, 1), -EINVAL, "a malformed image id");
    }

    /* ---- refusals of bake_distribute ---- */
    e = distribute("bld-00000000000000001", 10);
    ok(e == -ENOENT && strstr(error_message(), "does not exist in region"), "an unknown build: %s",
       error_message());
    {
        struct bake_distribute_options bad = {
            .data_dir = tmpdir, .region = "nowhere-1", .build_id = build};
        is_int(bake_distribute(&bad), -ENOENT, "a region with no data is -ENOENT");
        bad.region = "Bad";
        is_int(bake_distribute(&bad), -EINVAL, "an invalid region name is -EINVAL");
    }

    region_free(home);
    free(data);
    {
        char cmd[700];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            diag("could not remove %s", tmpdir);
    }
    return done_testing();
}

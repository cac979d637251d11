/* Who may use a resource and the changes to that (src/api/permissions.c),
 * and the permission tables behind them (src/registry/permissions.c):
 * the access rule and the answer for falling short of it, the two request
 * forms of a permission change with every refusal, and add, remove,
 * clear, list and check run the same way over both tables (images and
 * snapshots) on an in-memory registry. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api/internal.h"
#include "common/error.h"
#include "registry/images.h"
#include "registry/internal.h"
#include "registry/snapshot-permissions.h"
#include "service/service.h"
#include "tap.h"

#define ME "111111111111"
#define BOB "222222222222"
#define CAROL "333333333333"

static struct api_ctx new_ctx(const char *account)
{
    return (struct api_ctx){ .account = account, .action = "Test", .region = "us-east-1" };
}

static const struct api_permission_form launch = {
    .param = "LaunchPermission",
    .attribute = "launchPermission",
    .organizations = true,
};
static const struct api_permission_form cvp = {
    .param = "CreateVolumePermission",
    .attribute = "createVolumePermission",
    .max = 3,
};

static void test_decide(void)
{
    is_int(api_access_decide(ME, ME, false, false), API_ACCESS_OWNER, "the owner owns it");
    is_int(api_access_decide(ME, ME, true, true), API_ACCESS_OWNER,
           "permissions do not lower the owner");
    is_int(api_access_decide(BOB, ME, true, false), API_ACCESS_SHARED, "a user permission shares");
    is_int(api_access_decide(BOB, ME, false, true), API_ACCESS_SHARED, "public shares with all");
    is_int(api_access_decide(BOB, ME, false, false), API_ACCESS_NONE, "anybody else: nothing");
    is_int(api_access_decide(NULL, ME, false, false), API_ACCESS_NONE, "no account: nothing");
    ok(API_ACCESS_NONE < API_ACCESS_SHARED && API_ACCESS_SHARED < API_ACCESS_OWNER,
       "the levels are ordered");
}

static void test_image_access(void)
{
    struct registry_permission perms[] = {
        { .kind = REGISTRY_PERMISSION_USER, .value = BOB },
    };
    struct registry_image img = { .owner = ME, .state = IMAGE_AVAILABLE };
    struct api_ctx me = new_ctx(ME), bob = new_ctx(BOB), carol = new_ctx(CAROL);

    is_int(api_image_access(&me, &img), API_ACCESS_OWNER, "image: the owner");
    is_int(api_image_access(&bob, &img), API_ACCESS_NONE, "image: not shared yet");
    img.permissions = perms;
    img.n_permissions = 1;
    is_int(api_image_access(&bob, &img), API_ACCESS_SHARED, "image: shared with bob");
    is_int(api_image_access(&carol, &img), API_ACCESS_NONE, "image: not with carol");
    img.is_public = true;
    is_int(api_image_access(&carol, &img), API_ACCESS_SHARED, "image: public");
    ok(api_image_visible(&carol, &img), "api_image_visible agrees");
    img.state = IMAGE_DEREGISTERED;
    is_int(api_image_access(&me, &img), API_ACCESS_NONE, "image: deregistered, for its owner too");
    ok(!api_image_visible(&carol, &img), "a deregistered image is visible to nobody");
}

static void test_require(void)
{
    struct api_ctx ctx = new_ctx(BOB);
    const char *id = "ami-0123456789abcdef0";

    is_int(api_access_require(&ctx, API_RES_IMAGE, id, API_ACCESS_OWNER, API_ACCESS_OWNER), 0,
           "owner needing owner: fine");
    is_int(api_access_require(&ctx, API_RES_IMAGE, id, API_ACCESS_SHARED, API_ACCESS_SHARED), 0,
           "shared needing shared: fine");
    is_int(api_access_require(&ctx, API_RES_IMAGE, id, API_ACCESS_OWNER, API_ACCESS_SHARED), 0,
           "owner needing shared: fine");

    ctx = new_ctx(BOB);
    is_int(api_access_require(&ctx, API_RES_IMAGE, id, API_ACCESS_NONE, API_ACCESS_SHARED),
           -ENOENT, "invisible: -ENOENT");
    ok(ctx.error == API_ERR_NOT_FOUND && ctx.resource == API_RES_IMAGE,
       "invisible: the image's NotFound");
    ok(strstr(error_message(), id) != NULL, "names the id: %s", error_message());

    ctx = new_ctx(BOB);
    is_int(api_access_require(&ctx, API_RES_SNAPSHOT, "snap-0123456789abcdef0", API_ACCESS_SHARED,
                              API_ACCESS_OWNER),
           -EACCES, "shared needing owner: -EACCES");
    ok(ctx.error == API_ERR_RESOURCE_AUTH_FAILURE, "AuthFailure");
    is_str(error_message(), "Not authorized for snapshot:snap-0123456789abcdef0", "its message");

    ctx = new_ctx(BOB);
    is_int(api_access_require(&ctx, API_RES_VOLUME, "vol-0123456789abcdef0", API_ACCESS_NONE,
                              API_ACCESS_OWNER),
           -ENOENT, "a volume: -ENOENT");
    ok(ctx.error == API_ERR_NOT_FOUND && ctx.resource == API_RES_VOLUME, "the volume's NotFound");
    is_str(error_message(), "The volume 'vol-0123456789abcdef0' does not exist.", "its message");
    {
        struct api_error_reply reply;
        api_error_map(-ENOENT, ctx.error, ctx.resource, &reply);
        is_str(reply.code, "InvalidVolume.NotFound", "maps to InvalidVolume.NotFound");
        /* A bare EBUSY is a lock held too long: retryable 503, not "in use";
         * a resource in use is named by its handler. */
        api_error_map(-EBUSY, API_ERR_NONE, API_RES_IMAGE, &reply);
        is_str(reply.code, "Unavailable", "a bare EBUSY maps to Unavailable");
        is_int(reply.status, 503, "with 503, which SDKs retry");
        api_error_map(-EBUSY, API_ERR_IN_USE, API_RES_SNAPSHOT, &reply);
        is_str(reply.code, "InvalidSnapshot.InUse", "an explicit in-use snapshot");
        is_int(reply.status, 400, "with 400");
    }
}

/* Parse `s` into q (which keeps the storage) and the changes of `form`,
 * structured when `structured`. */
static int parse(const char *s, const struct api_permission_form *form, bool structured,
                 struct api_ctx *ctx, struct query *q, struct api_permission_changes *c)
{
    int r;

    *ctx = new_ctx(ME);
    *c = (struct api_permission_changes){ 0 };
    error_clear();
    r = query_parse(s, strlen(s), q);
    if (r < 0)
        return r;
    return structured ? api_permission_parse_structured(ctx, q, form, c)
                      : api_permission_parse_legacy(ctx, q, form, c);
}

#define PARSE_FAILS(s, form, structured, want_err, needle, what)                                  \
    do {                                                                                           \
        struct api_ctx ctx_;                                                                       \
        struct query q_;                                                                           \
        struct api_permission_changes c_;                                                          \
        int r_ = parse(s, form, structured, &ctx_, &q_, &c_);                                      \
        is_int(r_, -EINVAL, "%s: refused", what);                                                  \
        ok(ctx_.error == (want_err) && error_message() && strstr(error_message(), needle),         \
           "%s: %s", what, error_message() ? error_message() : "(none)");                          \
        api_permission_changes_release(&c_);                                                       \
        query_release(&q_);                                                                        \
    } while (0)

static void test_parse(void)
{
    struct api_ctx ctx;
    struct query q;
    struct api_permission_changes c;

    is_int(parse("LaunchPermission.Add.1.UserId=" BOB "&LaunchPermission.Add.2.Group=all"
                 "&LaunchPermission.Remove.1.UserId=" CAROL,
                 &launch, true, &ctx, &q, &c),
           0, "structured: two adds and a remove");
    ok(api_permission_form_used(&q, &launch), "the structured form is seen");
    ok(!api_permission_form_used(&q, &cvp), "not another attribute's");
    is_int(c.n, 3, "three changes");
    if (c.n == 3) {
        ok(c.v[0].add && c.v[0].kind == REGISTRY_PERMISSION_USER && strcmp(c.v[0].value, BOB) == 0,
           "add user bob");
        ok(c.v[1].add && c.v[1].kind == REGISTRY_PERMISSION_GROUP &&
               strcmp(c.v[1].value, "all") == 0,
           "add group all");
        ok(!c.v[2].add && c.v[2].kind == REGISTRY_PERMISSION_USER &&
               strcmp(c.v[2].value, CAROL) == 0,
           "remove user carol");
    }
    ok(c.adds && c.removes, "adds and removes are flagged");
    api_permission_changes_release(&c);
    query_release(&q);

    is_int(parse("CreateVolumePermission.Remove.1.UserId=" BOB
                 "&CreateVolumePermission.Remove.1.Group=all",
                 &cvp, true, &ctx, &q, &c),
           0, "structured: user and group in one entry");
    ok(c.n == 2 && !c.adds && c.removes, "two removes");
    api_permission_changes_release(&c);
    query_release(&q);

    is_int(parse("OperationType=add&UserId.1=" BOB "&UserId.2=" CAROL "&UserGroup.1=all", &launch,
                 false, &ctx, &q, &c),
           0, "legacy: add");
    ok(c.n == 3 && c.adds && !c.removes, "three adds");
    if (c.n == 3)
        ok(c.v[2].kind == REGISTRY_PERMISSION_GROUP, "users then the group");
    ok(!api_permission_form_used(&q, &launch), "the legacy form is not the structured one");
    api_permission_changes_release(&c);
    query_release(&q);

    is_int(parse("OperationType=remove&UserGroup.1=all", &cvp, false, &ctx, &q, &c), 0,
           "legacy: remove");
    ok(c.n == 1 && !c.v[0].add, "one remove");
    api_permission_changes_release(&c);
    query_release(&q);

    PARSE_FAILS("LaunchPermission.Add.1.Foo=x", &launch, true, API_ERR_MISSING_PARAMETER,
                "LaunchPermission.Add.1.UserId", "an entry with neither field");
    PARSE_FAILS("CreateVolumePermission.Remove.2.Foo=x", &cvp, true, API_ERR_MISSING_PARAMETER,
                "CreateVolumePermission.Remove.2.UserId", "an empty remove entry");
    PARSE_FAILS("LaunchPermission.Add.1.Group=admins", &launch, true,
                API_ERR_INVALID_PARAMETER_VALUE, "'admins'", "a group other than all");
    PARSE_FAILS("LaunchPermission.Add.1.UserId=12345", &launch, true,
                API_ERR_INVALID_PARAMETER_VALUE, "'12345'", "a short account");
    PARSE_FAILS("LaunchPermission.Add.1.UserId=12345678901a", &launch, true,
                API_ERR_INVALID_PARAMETER_VALUE, "12-digit", "a non-digit account");
    PARSE_FAILS("LaunchPermission.Add.1.OrganizationArn=arn:aws:organizations::1:o", &launch, true,
                API_ERR_INVALID_PARAMETER_VALUE, "organizations", "an organization");
    PARSE_FAILS("CreateVolumePermission.Add.1.OrganizationArn=arn", &cvp, true,
                API_ERR_MISSING_PARAMETER, "UserId", "no organizations in the form: no field");
    PARSE_FAILS("CreateVolumePermission.Add.1.UserId=" BOB "&CreateVolumePermission.Add.2.UserId="
                CAROL "&CreateVolumePermission.Add.3.Group=all"
                "&CreateVolumePermission.Remove.1.UserId=" ME,
                &cvp, true, API_ERR_INVALID_PARAMETER_VALUE, "At most 3 createVolumePermission",
                "more changes than the form's maximum");
    PARSE_FAILS("CreateVolumePermission.Add.01.UserId=" BOB, &cvp, true, API_ERR_NONE, "",
                "an index with a leading zero");
    PARSE_FAILS("UserId.1=" BOB, &launch, false, API_ERR_MISSING_PARAMETER, "OperationType",
                "legacy without OperationType");
    PARSE_FAILS("OperationType=replace&UserId.1=" BOB, &launch, false,
                API_ERR_INVALID_PARAMETER_VALUE, "operationType", "an unknown OperationType");
    PARSE_FAILS("OperationType=add", &launch, false, API_ERR_MISSING_PARAMETER,
                "UserId or UserGroup", "legacy with nobody named");
    PARSE_FAILS("OperationType=add&UserGroup.1=everyone", &cvp, false,
                API_ERR_INVALID_PARAMETER_VALUE, "'everyone'", "legacy with a bad group");
    PARSE_FAILS("OperationType=add&UserId.1=" BOB "&UserId.2=x", &cvp, false,
                API_ERR_INVALID_PARAMETER_VALUE, "'x'", "legacy with one bad user");
}

static int insert_image(struct registry *reg, const char *id)
{
    struct registry_image_device dev = { .device_name = (char *)"/dev/xvda" };
    struct registry_image img = {
        .owner = ME,
        .name = (char *)id, /* ids are valid names */
        .architecture = (char *)"x86_64",
        .root_device_name = (char *)"/dev/xvda",
        .root_device_type = (char *)"ebs",
        .virtualization_type = (char *)"hvm",
        .state = IMAGE_AVAILABLE,
        .creation_date = 1000,
        .devices = &dev,
        .n_devices = 1,
    };

    snprintf(img.id, sizeof(img.id), "%s", id);
    snprintf(dev.snapshot_id, sizeof(dev.snapshot_id), "snap-0123456789abcdef0");
    return registry_image_insert(reg, &img, NULL, 0);
}

static int insert_snapshot(struct registry *reg, const char *id)
{
    struct registry_snapshot s;

    memset(&s, 0, sizeof(s));
    snprintf(s.id, sizeof(s.id), "%s", id);
    snprintf(s.owner, sizeof(s.owner), "%s", ME);
    s.state = SNAPSHOT_PENDING;
    s.volume_size = 1 << 20;
    s.volume_size_gib = 1;
    s.start_time = 1000;
    return registry_snapshot_insert(reg, &s);
}

/* The same behaviour over both tables. */
static void test_table(struct registry *reg, const struct reg_permission_table *t, const char *id,
                       const char *absent, const char *malformed)
{
    struct registry_permission *p = NULL;
    size_t n = 99;
    bool user = true, pub = true;

    is_int(reg_permission_add(reg, t, id, REGISTRY_PERMISSION_USER, BOB), 0, "%s: share", t->what);
    is_int(reg_permission_add(reg, t, id, REGISTRY_PERMISSION_USER, BOB), 0,
           "%s: sharing again is success", t->what);
    is_int(reg_permission_add(reg, t, id, REGISTRY_PERMISSION_GROUP, "all"), 0,
           "%s: make it public", t->what);
    error_clear();
    is_int(reg_permission_add(reg, t, id, REGISTRY_PERMISSION_GROUP, "admins"), -EINVAL,
           "%s: another group is -EINVAL", t->what);
    ok(strstr(error_message(), t->noun) && strstr(error_message(), "'admins'"), "%s: says %s",
       t->what, error_message());
    is_int(reg_permission_add(reg, t, id, REGISTRY_PERMISSION_USER, "1234"), -EINVAL,
           "%s: a short account is -EINVAL", t->what);
    is_int(reg_permission_add(reg, t, id, (enum registry_permission_kind)7, BOB), -EINVAL,
           "%s: an unknown kind is -EINVAL", t->what);
    is_int(reg_permission_add(reg, t, malformed, REGISTRY_PERMISSION_USER, BOB), -EINVAL,
           "%s: a malformed id is -EINVAL", t->what);
    is_int(reg_permission_add(reg, t, absent, REGISTRY_PERMISSION_USER, BOB), -ENOENT,
           "%s: an absent resource is -ENOENT", t->what);
    is_int(reg_permission_remove(reg, t, id, REGISTRY_PERMISSION_USER, CAROL), 0,
           "%s: removing an absent permission is success", t->what);
    is_int(reg_permission_clear(reg, t, absent), -ENOENT, "%s: clearing an absent resource",
           t->what);

    is_int(reg_permission_list(reg, t, id, &p, &n), 0, "%s: list", t->what);
    ok(n == 2 && p[0].kind == REGISTRY_PERMISSION_USER && strcmp(p[0].value, BOB) == 0 &&
           p[1].kind == REGISTRY_PERMISSION_GROUP && strcmp(p[1].value, "all") == 0,
       "%s: the user, then the group", t->what);
    free(p);
    is_int(reg_permission_check(reg, t, id, BOB, &user, &pub), 0, "%s: check bob", t->what);
    ok(user && pub, "%s: bob is named and it is public", t->what);
    is_int(reg_permission_check(reg, t, id, CAROL, &user, &pub), 0, "%s: check carol", t->what);
    ok(!user && pub, "%s: carol only through public", t->what);

    /* A write inside the caller's transaction, rolled back: nothing stays. */
    is_int(registry_begin(reg), 0, "%s: begin", t->what);
    is_int(reg_permission_write(reg, t, id, REGISTRY_PERMISSION_USER, CAROL, true), 0,
           "%s: write in a transaction", t->what);
    registry_rollback(reg);
    is_int(reg_permission_check(reg, t, id, CAROL, &user, NULL), 0, "%s: check again", t->what);
    ok(!user, "%s: the rolled-back write is gone", t->what);

    is_int(reg_permission_remove(reg, t, id, REGISTRY_PERMISSION_GROUP, "all"), 0,
           "%s: make it private", t->what);
    is_int(reg_permission_check(reg, t, id, CAROL, &user, &pub), 0, "%s: check carol", t->what);
    ok(!user && !pub, "%s: carol has nothing", t->what);
    is_int(reg_permission_clear(reg, t, id), 0, "%s: clear", t->what);
    n = 99;
    p = NULL;
    is_int(reg_permission_list(reg, t, id, &p, &n), 0, "%s: list", t->what);
    is_int(n, 0, "%s: empty after clear", t->what);
    free(p);
}

static void test_tables(void)
{
    struct registry *reg = NULL;
    struct region rg = { 0 };
    struct registry_snapshot s = { .owner = ME };
    struct api_ctx bob = new_ctx(BOB), me = new_ctx(ME);
    enum api_access a = API_ACCESS_OWNER;

    ok(registry_open(":memory:", &reg) == 0, "open an in-memory registry");
    if (!reg)
        return;
    is_int(insert_snapshot(reg, "snap-0123456789abcdef0"), 0, "insert a snapshot");
    is_int(insert_image(reg, "ami-0123456789abcdef0"), 0, "insert an image");
    test_table(reg, &reg_image_permissions, "ami-0123456789abcdef0", "ami-0000000000000ffff",
               "ami-xyz");
    test_table(reg, &reg_snapshot_permissions, "snap-0123456789abcdef0", "snap-0000000000000ffff",
               "snap-xyz");

    /* api_snapshot_access() over the registry. */
    rg.reg = reg;
    snprintf(s.id, sizeof(s.id), "snap-0123456789abcdef0");
    is_int(api_snapshot_access(&bob, &rg, &s, &a), 0, "snapshot access for bob");
    is_int(a, API_ACCESS_NONE, "bob cannot see a private snapshot");
    is_int(registry_snapshot_permission_add(reg, s.id, REGISTRY_PERMISSION_USER, BOB), 0,
           "share it with bob");
    is_int(api_snapshot_access(&bob, &rg, &s, &a), 0, "snapshot access for bob");
    is_int(a, API_ACCESS_SHARED, "bob uses it");
    ok(!api_snapshot_visible(&bob, &s), "but does not own it");
    is_int(api_snapshot_access(&me, &rg, &s, &a), 0, "snapshot access for the owner");
    is_int(a, API_ACCESS_OWNER, "the owner owns it");
    ok(api_snapshot_visible(&me, &s), "api_snapshot_visible is ownership");
    registry_free(reg);
}

int main(void)
{
    test_decide();
    test_image_access();
    test_require();
    test_parse();
    test_tables();
    return done_testing();
}

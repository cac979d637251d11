/* The instance manager (src/service/instances.c) without a guest: an image
 * whose disk holds no file system cannot boot, so every launch ends
 * `stopped` with Server.InternalError and no QEMU ever runs.  What is
 * checked: a launch that fails inside its transaction (a security group
 * that does not exist, checked after the volume and the row were
 * inserted) leaves no instance and no volume; capacity refusals (-ENOSPC)
 * register nothing; MaxCount is cut to what fits, MinCount is honoured;
 * a successful launch registers `pending` instances with attached root
 * volumes, then their boot failure is recorded with its reason; the hooks
 * (-ENOENT, -ESRCH, a held view of a stopped instance); stop of a stopped
 * instance, start of a terminated one; terminate with DeleteOnTermination
 * (the volume is gone) and without (the volume is available, detached);
 * the restart policy for a row a killed serve left `running`. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "registry/images.h"
#include "registry/instances.h"
#include "registry/volumes.h"
#include "service/instance-types.h"
#include "service/instances.h"
#include "service/service.h"
#include "tap.h"

#define OWNER "123456789012"
#define MiB (1024 * 1024)

static char tmpdir[] = "/tmp/kiln-test-instance-manager.XXXXXX";

static int count_rows(struct region *r, size_t *ret_inst, size_t *ret_vols)
{
    struct registry_instance **in = NULL;
    struct registry_volume **v = NULL;
    size_t ni = 0, nv = 0;
    int e = registry_instance_list(r->reg, &in, &ni);

    if (e == 0)
        e = registry_volume_list(r->reg, &v, &nv);
    registry_instance_list_free(in, ni);
    registry_volume_list_free(v, nv);
    *ret_inst = ni;
    *ret_vols = nv;
    return e;
}

/* Wait (at most 60 s) until the instance is in state s. */
static bool wait_state(struct region *r, const char *id, enum instance_state s,
                       struct registry_instance **ret)
{
    for (int i = 0; i < 600; i++) {
        struct registry_instance *row = NULL;
        if (registry_instance_get(r->reg, id, &row) == 0 && row->state == s) {
            *ret = row;
            return true;
        }
        registry_instance_free(row);
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return false;
}

struct hook_seen {
    bool called, root_null, agent_null;
    char owner[ACCOUNT_ID_SIZE];
};

static int hook(const struct instance_view *iv, void *ud)
{
    struct hook_seen *h = ud;

    h->called = true;
    h->root_null = iv->root == NULL;
    h->agent_null = iv->agent_socket == NULL;
    snprintf(h->owner, sizeof(h->owner), "%s", iv->row->owner);
    return 7;
}

int main(void)
{
    struct region *r = NULL;
    struct instance_manager *m = NULL;
    struct service_image_import_options io = {
        .name = "unbootable", .owner = OWNER, .format = IMAGE_FORMAT_RAW};
    char path[600], ami[ID_MAX_SIZE], sid[ID_MAX_SIZE], res[ID_MAX_SIZE];
    char(*ids)[ID_MAX_SIZE] = NULL;
    const char *bogus_sg[] = {"sg-0123456789abcdef0"};
    const char *bogus_sg_name[] = {"nothing"};
    const char *regions[] = {"us-east-1"};
    struct instance_manager_options mo = {.regions = regions, .n_regions = 1};
    struct registry_instance *row = NULL;
    struct registry_volume *vol = NULL;
    struct hook_seen seen = {0};
    size_t n = 0, ni, nv;
    int fd;

    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    mo.data_dir = tmpdir;
    /* a disk of random bytes: no ext4, no kernel */
    snprintf(path, sizeof(path), "%s/disk.raw", tmpdir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (int i = 0; i < 4; i++) {
        char buf[MiB];
        for (size_t k = 0; k < sizeof(buf); k++)
            buf[k] = (char)(k * 31 + (size_t)i * 7 + k / 4096);
        if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
            return 1;
    }
    close(fd);
    is_int(region_open(tmpdir, "us-east-1", false, &r), 0, "opened a region");
    is_int(service_image_import(r, path, &io, ami, sid), 0, "imported an image");
    ok(instance_manager_get() == NULL, "no manager before one is made");
    is_int(instance_manager_new(&mo, &m), 0, "made a manager");
    ok(instance_manager_get() == m, "it is the process's");

    struct instance_launch l = {
        .owner = OWNER,
        .image_id = ami,
        .instance_type = "t3.nano",
        .http_endpoint_enabled = true,
        .http_hop_limit = 1,
        .root_delete_on_termination = -1,
        .min_count = 2,
        .max_count = 2,
        .security_group_ids = bogus_sg,
        .security_group_names = bogus_sg_name,
        .n_security_groups = 1,
    };
    /* a failure inside the transaction: after two volumes and rows */
    is_int(instance_manager_launch(m, "us-east-1", &l, res, &ids, &n), -ENOENT,
           "a group that does not exist fails the launch in its transaction");
    is_int(count_rows(r, &ni, &nv), 0, "listed");
    ok(ni == 0 && nv == 0, "nothing left behind (%zu instances, %zu volumes)", ni, nv);
    l.n_security_groups = 0;

    /* capacity */
    struct host_capacity host;
    is_int(host_capacity_read(&host), 0, "the host's capacity");
    l.min_count = l.max_count = 1;
    if (host.memory_mib * INSTANCE_MEMORY_BUDGET_PERCENT / 100 < 32768) {
        l.instance_type = "r5.xlarge";
        is_int(instance_manager_launch(m, "us-east-1", &l, res, &ids, &n), -ENOSPC,
               "a type bigger than the host (r5.xlarge, 32 GiB): -ENOSPC");
        ok(strstr(error_message() ? error_message() : "", "memory") != NULL,
           "the message names what is short: %s", error_message());
    } else {
        ok(1, "# SKIP this host has room for an r5.xlarge");
        ok(1, "# SKIP");
    }
    l.instance_type = "t3.nano";
    l.min_count = 1000;
    l.max_count = 1000;
    is_int(instance_manager_launch(m, "us-east-1", &l, res, &ids, &n), -ENOSPC,
           "more instances than fit: -ENOSPC");
    is_int(count_rows(r, &ni, &nv), 0, "listed");
    ok(ni == 0 && nv == 0, "capacity refusals register nothing");
    l.image_id = "ami-0123456789abcdef0";
    l.min_count = l.max_count = 1;
    is_int(instance_manager_launch(m, "us-east-1", &l, res, &ids, &n), -ENOENT,
           "an unknown image: -ENOENT");
    l.image_id = ami;

    /* as many as fit, at least MinCount */
    l.min_count = 1;
    l.max_count = 1000;
    is_int(instance_manager_launch(m, "us-east-1", &l, res, &ids, &n), 0, "launched");
    ok(n >= 1 && n < 1000, "MaxCount cut to what fits (%zu)", n);
    ok(id_is_valid("r", res), "a reservation id");
    /* every one fails to boot: no file system */
    for (size_t i = 0; i < n; i++) {
        ok(wait_state(r, ids[i], INSTANCE_STOPPED, &row), "%s: stopped", ids[i]);
        if (!row)
            continue;
        is_str(row->reason_code, "Server.InternalError", "%s: reason", ids[i]);
        ok(strstr(row->reason_message, "could not boot") != NULL, "%s: says why: %s", ids[i],
           row->reason_message);
        is_int(registry_volume_get(r->reg, row->root_volume_id, &vol), 0, "%s: its volume", ids[i]);
        if (vol) {
            is_str(vol->instance_id, ids[i], "attached to it");
            ok(vol->state == VOLUME_IN_USE, "in use");
        }
        registry_volume_free(vol);
        vol = NULL;
        if (i > 0)
            is_int(instance_manager_terminate(m, "us-east-1", ids[i], true), 0, "%s: terminated",
                   ids[i]);
        registry_instance_free(row);
        row = NULL;
    }

    /* hooks */
    is_int(instance_manager_with_instance(m, "us-east-1", "i-0123456789abcdef0", hook, &seen),
           -ENOENT, "no such instance: -ENOENT");
    is_int(instance_manager_with_volume(m, "us-east-1", "vol-0123456789abcdef0", hook, &seen),
           -ESRCH, "no such open volume: -ESRCH");
    is_int(instance_manager_with_instance(m, "us-east-1", ids[0], hook, &seen), 7,
           "the hook's result");
    ok(seen.called && seen.root_null && seen.agent_null, "a stopped instance: no volume held");
    is_str(seen.owner, OWNER, "the row");

    /* lifecycle refusals */
    is_int(instance_manager_stop(m, "us-east-1", ids[0], false, true), 0,
           "stopping a stopped instance: success");
    is_int(registry_instance_get(r->reg, ids[0], &row), 0, "its row");
    char vol_id[ID_MAX_SIZE];
    snprintf(vol_id, sizeof(vol_id), "%s", row->root_volume_id);
    registry_instance_free(row);
    row = NULL;

    /* the restart policy: a row a killed serve left running */
    is_int(registry_instance_set_state(r->reg, ids[0], INSTANCE_RUNNING, "", "", NULL), 0,
           "the row says running");
    instance_manager_free(m);
    m = NULL;
    ok(instance_manager_get() == NULL, "no manager after free");
    is_int(instance_manager_new(&mo, &m), 0, "a new manager");
    /* it recorded the loss, then started it again, which fails again */
    ok(wait_state(r, ids[0], INSTANCE_STOPPED, &row), "stopped again");
    if (row)
        ok(strstr(row->reason_message, "could not boot") ||
               strstr(row->reason_message, "without stopping"),
           "with a reason: %s", row->reason_message);
    registry_instance_free(row);
    row = NULL;

    /* terminate without DeleteOnTermination: the volume stays */
    is_int(registry_instance_get(r->reg, ids[0], &row), 0, "its row");
    registry_instance_free(row);
    row = NULL;
    is_int(instance_manager_terminate(m, "us-east-1", ids[0], true), 0, "terminated");
    ok(wait_state(r, ids[0], INSTANCE_TERMINATED, &row), "terminated");
    registry_instance_free(row);
    row = NULL;
    is_int(registry_volume_get(r->reg, vol_id, &vol), -ENOENT,
           "DeleteOnTermination (the image's default): the volume is gone");
    registry_volume_free(vol);
    vol = NULL;
    is_int(instance_manager_start(m, "us-east-1", ids[0]), -EINVAL,
           "a terminated instance cannot start");
    is_int(instance_manager_terminate(m, "us-east-1", ids[0], true), 0,
           "terminating it again: success");

    l.max_count = 1;
    l.root_delete_on_termination = 0;
    free(ids);
    ids = NULL;
    is_int(instance_manager_launch(m, "us-east-1", &l, res, &ids, &n), 0, "launched one more");
    ok(wait_state(r, ids[0], INSTANCE_STOPPED, &row), "it stopped (cannot boot)");
    if (row)
        snprintf(vol_id, sizeof(vol_id), "%s", row->root_volume_id);
    registry_instance_free(row);
    row = NULL;
    is_int(instance_manager_terminate(m, "us-east-1", ids[0], true), 0, "terminated");
    is_int(registry_volume_get(r->reg, vol_id, &vol), 0, "the volume stays");
    if (vol)
        ok(vol->state == VOLUME_AVAILABLE && !vol->instance_id[0], "available, detached");
    registry_volume_free(vol);

    /* terminated instances: the directory keeps only console.log, the
     * row vanishes after the retention period (the clock is an argument) */
    {
        struct registry_instance stopped = {.state = INSTANCE_STOPPED, .terminated_time = 1};
        char *dir = instance_manager_dir(m, "us-east-1", ids[0]);
        char file[700];
        int64_t keep = instance_manager_terminated_retention_ms(m), t;
        struct stat st;

        is_int((int)(keep / 1000), 3600, "the default retention: an hour");
        ok(!instance_expired(&stopped, keep, INT64_MAX / 2), "only terminated rows expire");
        is_int(registry_instance_get(r->reg, ids[0], &row), 0, "the terminated row");
        t = row ? row->terminated_time : 0;
        ok(t > 0, "records when it was terminated");
        if (row) {
            ok(!instance_expired(row, keep, t + keep - 1), "visible until the period ends");
            ok(instance_expired(row, keep, t + keep), "gone when it ends");
        }
        registry_instance_free(row);
        row = NULL;
        snprintf(file, sizeof(file), "%s/metadata", dir);
        ok(stat(dir, &st) == 0 && stat(file, &st) < 0 && errno == ENOENT,
           "its directory stays, emptied but for console.log");
        snprintf(file, sizeof(file), "%s/console.log", dir);
        fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ok(fd >= 0 && write(fd, "bye\n", 4) == 4, "a console log");
        if (fd >= 0)
            close(fd);
        is_int(registry_tag_set(r->reg, ids[0], "k", "v"), 0, "a tag");
        /* the instances terminated before it go; it stays */
        ok(instance_manager_expire(m, "us-east-1", t + keep - 1) >= 0, "expired the older ones");
        is_int(registry_instance_get(r->reg, ids[0], &row), 0,
               "a millisecond before its period ends, the row stays");
        registry_instance_free(row);
        row = NULL;
        is_int(instance_manager_expire(m, "us-east-1", t + keep), 1, "expired at the end");
        is_int(registry_instance_get(r->reg, ids[0], &row), -ENOENT, "the row is gone");
        struct registry_tag *tags = NULL;
        size_t nt = 9;
        is_int(registry_tag_list(r->reg, ids[0], &tags, &nt), 0, "its tags");
        is_int((int)nt, 0, "are gone");
        registry_tag_list_free(tags, nt);
        ok(stat(dir, &st) < 0 && errno == ENOENT, "its directory is gone");
        is_int(count_rows(r, &ni, &nv), 0, "counted");
        is_int((int)ni, 0, "every terminated instance went");
        is_int(instance_manager_expire(m, "eu-west-9", 0), -ENOENT, "a region not served");
        free(dir);
    }

    free(ids);
    instance_manager_free(m);
    region_free(r);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmpdir);
    return done_testing();
}

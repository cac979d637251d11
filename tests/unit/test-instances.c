/* The instances table (src/registry/instances.c, migration 9) on an
 * in-memory registry: insert, get, list, state changes with reasons, the
 * loopback address allocation (unique among instances not terminated,
 * given back on termination), delete with tags, and the refusals:
 * malformed fields, duplicate ids and addresses, absent rows, a row damaged
 * behind kiln's back. */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "registry/instances.h"
#include "registry/keypairs.h"
#include "tap.h"

static struct registry_instance make(const char *id, const char *address)
{
    struct registry_instance in = {.launch_time = 1700000000000,
                                   .state = INSTANCE_PENDING,
                                   .root_delete_on_termination = true,
                                   .http_endpoint_enabled = true,
                                   .http_hop_limit = 1};
    snprintf(in.id, sizeof(in.id), "%s", id);
    snprintf(in.owner, sizeof(in.owner), "123456789012");
    snprintf(in.reservation_id, sizeof(in.reservation_id), "r-0123456789abcdef0");
    snprintf(in.image_id, sizeof(in.image_id), "ami-0123456789abcdef0");
    snprintf(in.instance_type, sizeof(in.instance_type), "t3.nano");
    snprintf(in.availability_zone, sizeof(in.availability_zone), "us-east-1a");
    snprintf(in.address, sizeof(in.address), "%s", address);
    snprintf(in.root_device_name, sizeof(in.root_device_name), "/dev/xvda");
    return in;
}

int main(void)
{
    struct registry *reg = NULL;
    struct registry_instance *got = NULL, **list = NULL;
    size_t n = 0;
    char addr[INSTANCE_ADDRESS_SIZE];
    const char *a = "i-0123456789abcdef0", *b = "i-0123456789abcdef1";
    uint8_t user_data[] = {'#', '!', '/', 'b', 'i', 'n', '/', 's', 'h', '\n', 0, 0xff};

    is_int(registry_open(":memory:", &reg), 0, "opened an in-memory registry");

    is_int(registry_instance_address_allocate(reg, addr), 0, "allocated an address");
    is_str(addr, "127.100.0.2", "the first address");
    struct registry_instance in = make(a, addr);
    snprintf(in.key_name, sizeof(in.key_name), "my key");
    snprintf(in.client_token, sizeof(in.client_token), "token-1");
    in.user_data = user_data;
    in.user_data_len = sizeof(user_data);
    in.http_tokens_required = true;
    in.http_hop_limit = 2;
    is_int(registry_instance_insert(reg, &in), 0, "inserted an instance");
    is_int(registry_instance_insert(reg, &in), -EEXIST, "again: EEXIST");

    is_int(registry_instance_address_allocate(reg, addr), 0, "allocated a second address");
    is_str(addr, "127.100.0.3", "the next one");
    struct registry_instance same = make(b, "127.100.0.2");
    is_int(registry_instance_insert(reg, &same), -EEXIST, "a taken address: EEXIST");
    struct registry_instance other = make(b, addr);
    other.launch_index = 1;
    is_int(registry_instance_insert(reg, &other), 0, "inserted a second instance");

    is_int(registry_instance_get(reg, a, &got), 0, "read it back");
    ok(got && strcmp(got->owner, "123456789012") == 0 &&
           strcmp(got->reservation_id, "r-0123456789abcdef0") == 0 &&
           strcmp(got->image_id, "ami-0123456789abcdef0") == 0 &&
           strcmp(got->instance_type, "t3.nano") == 0 && got->state == INSTANCE_PENDING &&
           !got->reason_code[0] && got->launch_time == 1700000000000 &&
           strcmp(got->key_name, "my key") == 0 && got->user_data_len == sizeof(user_data) &&
           memcmp(got->user_data, user_data, sizeof(user_data)) == 0 &&
           strcmp(got->address, "127.100.0.2") == 0 &&
           strcmp(got->root_device_name, "/dev/xvda") == 0 && !got->root_volume_id[0] &&
           got->root_delete_on_termination && got->http_tokens_required &&
           got->http_endpoint_enabled && got->http_hop_limit == 2 &&
           strcmp(got->client_token, "token-1") == 0,
       "every field survives, user data byte for byte");
    registry_instance_free(got);
    got = NULL;

    is_int(registry_instance_get(reg, b, &got), 0, "read the second");
    ok(got && got->user_data == NULL && got->user_data_len == 0 && !got->key_name[0] &&
           !got->client_token[0] && got->launch_index == 1,
       "no user data, key or token is none, not empty");
    registry_instance_free(got);
    got = NULL;

    is_int(registry_instance_list(reg, &list, &n), 0, "listed");
    ok(n == 2 && strcmp(list[0]->id, a) == 0 && strcmp(list[1]->id, b) == 0,
       "two rows, by launch index within the reservation");
    registry_instance_list_free(list, n);

    /* State changes. */
    is_int(
        registry_instance_set_state(reg, a, INSTANCE_RUNNING, NULL, NULL, "vol-0123456789abcdef0"),
        0, "running, with its root volume");
    is_int(registry_instance_set_state(reg, a, INSTANCE_STOPPED, "Server.InternalError",
                                       "Server.InternalError: QEMU exited with status 1", NULL),
           0, "stopped with a reason");
    is_int(registry_instance_get(reg, a, &got), 0, "read it back");
    ok(got && got->state == INSTANCE_STOPPED &&
           strcmp(got->reason_code, "Server.InternalError") == 0 &&
           strstr(got->reason_message, "QEMU exited") &&
           strcmp(got->root_volume_id, "vol-0123456789abcdef0") == 0,
       "state, reason and the kept root volume");
    registry_instance_free(got);
    got = NULL;
    is_int(registry_instance_set_state(reg, a, (enum instance_state)17, NULL, NULL, NULL), -EINVAL,
           "a state code EC2 does not have: EINVAL");
    is_int(registry_instance_set_state(reg, a, INSTANCE_RUNNING, NULL, NULL, "vol-nope"), -EINVAL,
           "a malformed volume id: EINVAL");
    is_int(
        registry_instance_set_state(reg, "i-00000000000000000", INSTANCE_RUNNING, NULL, NULL, NULL),
        -ENOENT, "an absent instance: ENOENT");

    /* Terminated gives the address back. */
    is_int(registry_instance_set_state(reg, a, INSTANCE_TERMINATED, "Client.UserInitiatedShutdown",
                                       "Client.UserInitiatedShutdown: User initiated shutdown", ""),
           0, "terminated, the root volume gone");
    is_int(registry_instance_address_allocate(reg, addr), 0, "allocated again");
    is_str(addr, "127.100.0.2", "the terminated instance's address is free again");
    is_int(registry_instance_set_state(reg, a, INSTANCE_RUNNING, NULL, NULL, NULL), 0,
           "a terminated row could be revived while nobody holds its address");
    is_int(registry_instance_address_allocate(reg, addr), 0, "allocated again");
    is_str(addr, "127.100.0.4", "and then it holds it again");

    /* Refusals. */
    struct registry_instance bad = make("i-0123456789abcdef2", "127.100.0.9");
    snprintf(bad.address, sizeof(bad.address), "10.0.0.1");
    is_int(registry_instance_insert(reg, &bad), -EINVAL, "an address outside 127/8: EINVAL");
    snprintf(bad.address, sizeof(bad.address), "127.0.0.01");
    is_int(registry_instance_insert(reg, &bad), -EINVAL, "a leading zero: EINVAL");
    bad = make("i-0123456789ABCDEF2", "127.100.0.9");
    is_int(registry_instance_insert(reg, &bad), -EINVAL, "uppercase id: EINVAL");
    bad = make("i-0123456789abcdef2", "127.100.0.9");
    bad.state = (enum instance_state)1;
    is_int(registry_instance_insert(reg, &bad), -EINVAL, "bad state: EINVAL");
    bad = make("i-0123456789abcdef2", "127.100.0.9");
    bad.http_hop_limit = 65;
    is_int(registry_instance_insert(reg, &bad), -EINVAL, "hop limit 65: EINVAL");
    bad = make("i-0123456789abcdef2", "127.100.0.9");
    bad.user_data_len = INSTANCE_USER_DATA_MAX + 1;
    bad.user_data = calloc(1, bad.user_data_len);
    is_int(registry_instance_insert(reg, &bad), -EINVAL, "user data over 16 KiB: EINVAL");
    free(bad.user_data);
    bad = make("i-0123456789abcdef2", "127.100.0.9");
    snprintf(bad.image_id, sizeof(bad.image_id), "snap-0123456789abcdef0");
    is_int(registry_instance_insert(reg, &bad), -EINVAL, "an image id that is not ami-: EINVAL");
    bad = make("i-0123456789abcdef2", "127.100.0.9");
    snprintf(bad.key_name, sizeof(bad.key_name), "line\nbreak");
    is_int(registry_instance_insert(reg, &bad), -EINVAL, "a control character: EINVAL");
    is_int(registry_instance_get(reg, "i-short", &got), -EINVAL, "malformed id: EINVAL");
    is_int(registry_instance_get(reg, "i-00000000000000000", &got), -ENOENT, "absent: ENOENT");
    ok(got == NULL, "nothing returned on failure");

    /* Security groups: linked, in use, given back on termination. */
    {
        struct registry_security_group g = {.create_time = 1};
        const char *sg = "sg-0123456789abcdef0", *absent = "sg-00000000000000000";
        const char *both[] = {sg, absent};
        char **ids = NULL;
        size_t n_ids = 0;

        snprintf(g.id, sizeof(g.id), "%s", sg);
        snprintf(g.owner, sizeof(g.owner), "123456789012");
        snprintf(g.name, sizeof(g.name), "web");
        snprintf(g.description, sizeof(g.description), "web servers");
        is_int(registry_security_group_insert(reg, &g), 0, "a security group");
        is_int(registry_instance_security_groups_set(reg, b, &sg, 1), 0, "linked to it");
        is_int(registry_instance_security_groups_set(reg, b, both, 2), -ENOENT,
               "an absent group: ENOENT");
        is_int(registry_instance_security_groups(reg, b, &ids, &n_ids), 0, "listed the links");
        ok(n_ids == 1 && strcmp(ids[0], sg) == 0, "the failed change left the link as it was");
        registry_instance_security_groups_free(ids, n_ids);
        is_int(registry_security_group_delete(reg, sg), -EBUSY, "a group in use: EBUSY");
        is_int(registry_instance_set_state(reg, b, INSTANCE_TERMINATED, NULL, NULL, NULL), 0,
               "its instance terminated");
        is_int(registry_security_group_delete(reg, sg), 0, "then the group can go");
        is_int(registry_instance_security_groups(reg, b, &ids, &n_ids), 0, "listed again");
        ok(n_ids == 0, "the terminated instance lost the link");
        registry_instance_security_groups_free(ids, n_ids);
        is_int(registry_security_group_delete(reg, sg), -ENOENT, "deleted again: ENOENT");
    }

    /* Delete takes its tags along. */
    is_int(registry_tag_set(reg, b, "Name", "web"), 0, "tagged");
    is_int(registry_instance_delete(reg, b), 0, "deleted");
    is_int(registry_instance_delete(reg, b), -ENOENT, "deleted again: ENOENT");
    struct registry_tag *tags = NULL;
    is_int(registry_tag_list(reg, b, &tags, &n), 0, "listed its tags");
    ok(n == 0, "the tags went with it");
    registry_tag_list_free(tags, n);

    registry_free(reg);

    /* A row changed behind kiln's back is reported, not used. */
    char path[] = "/tmp/kiln-test-instances-XXXXXX";
    int fd = mkstemp(path);
    ok(fd >= 0, "temporary file");
    if (fd >= 0) {
        sqlite3 *db = NULL;
        close(fd);
        unlink(path);
        is_int(registry_open(path, &reg), 0, "opened a file registry");
        struct registry_instance c = make(a, "127.100.0.2");
        is_int(registry_instance_insert(reg, &c), 0, "inserted");
        registry_free(reg);
        ok(sqlite3_open(path, &db) == SQLITE_OK &&
               sqlite3_exec(db, "UPDATE instances SET instance_type = 'x\x01y'", NULL, NULL,
                            NULL) == SQLITE_OK,
           "damaged the row with sqlite3");
        sqlite3_close(db);
        is_int(registry_open(path, &reg), 0, "reopened");
        is_int(registry_instance_get(reg, a, &got), -EBADMSG, "the damaged row: EBADMSG");
        registry_free(reg);
        unlink(path);
        char side[sizeof(path) + 8];
        snprintf(side, sizeof(side), "%s-wal", path);
        unlink(side);
        snprintf(side, sizeof(side), "%s-shm", path);
        unlink(side);
    }
    return done_testing();
}

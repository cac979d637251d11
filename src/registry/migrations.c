/* The registry schema, as numbered migrations (docs/registry-schema.md).
 *
 * Rules:
 *   - Migration N takes a database from user_version N-1 to N.  It runs in
 *     one BEGIN IMMEDIATE transaction together with "PRAGMA user_version =
 *     N", so a crash leaves the database at N-1 or N, never in between, and
 *     two processes opening the same new file cannot both apply it (the
 *     version is reread after the write lock is taken).
 *   - A migration, once released, is never edited: a change to the schema is
 *     a new migration appended to the table below.  Old databases
 *     (tests/fixtures/) must keep opening.
 *   - A database at a version newer than the table knows was written by a
 *     newer kiln; it is refused (-EPROTO) rather than used with a schema we
 *     do not understand.
 *   - Migration 1 stamps PRAGMA application_id so that another program's
 *     SQLite file is never mistaken for a registry (or migrated).
 *
 * Migration SQL is constant text: it never contains values from input.
 */
#include <errno.h>
#include <stdio.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "registry/internal.h"

/* Ids are "snap-" and 17 lowercase hex digits (common/ids.h); accounts are
 * 12 decimal digits; block map ids are 64 lowercase hex digits.  Times are
 * unix milliseconds.  STRICT tables make SQLite enforce the column types. */
static const char migration_1[] =
    "CREATE TABLE settings (\n"
    "    key   TEXT NOT NULL PRIMARY KEY,\n"
    "    value TEXT NOT NULL\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE TABLE snapshots (\n"
    "    id              TEXT NOT NULL PRIMARY KEY\n"
    "                    CHECK (length(id) = 22 AND substr(id, 1, 5) = 'snap-'\n"
    "                           AND substr(id, 6) NOT GLOB '*[^0-9a-f]*'),\n"
    "    owner           TEXT NOT NULL\n"
    "                    CHECK (length(owner) = 12 AND owner NOT GLOB '*[^0-9]*'),\n"
    "    state           TEXT NOT NULL\n"
    "                    CHECK (state IN ('pending', 'completed', 'error')),\n"
    "    progress        INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),\n"
    "    volume_size     INTEGER NOT NULL CHECK (volume_size >= 0),\n"
    "    volume_size_gib INTEGER NOT NULL CHECK (volume_size_gib >= 0),\n"
    "    description     TEXT,\n"
    "    start_time      INTEGER NOT NULL,\n"
    "    completion_time INTEGER,\n"
    "    map_id          TEXT\n"
    "                    CHECK (map_id IS NULL OR (length(map_id) = 64\n"
    "                           AND map_id NOT GLOB '*[^0-9a-f]*')),\n"
    "    parent_id       TEXT\n"
    "                    CHECK (parent_id IS NULL OR (length(parent_id) = 22\n"
    "                           AND substr(parent_id, 1, 5) = 'snap-'\n"
    "                           AND substr(parent_id, 6) NOT GLOB '*[^0-9a-f]*'\n"
    "                           AND parent_id <> id)),\n"
    "    state_message   TEXT,\n"
    "    CHECK (state <> 'completed' OR map_id IS NOT NULL)\n"
    ") STRICT;\n"
    "\n"
    "CREATE INDEX snapshots_owner ON snapshots (owner, start_time, id);\n"
    "CREATE INDEX snapshots_start ON snapshots (start_time, id);\n"
    "CREATE INDEX snapshots_map ON snapshots (map_id);\n"
    "CREATE INDEX snapshots_parent ON snapshots (parent_id);\n"
    "\n"
    "CREATE TABLE tags (\n"
    "    resource_id TEXT NOT NULL,\n"
    "    key         TEXT NOT NULL CHECK (length(key) > 0),\n"
    "    value       TEXT NOT NULL DEFAULT '',\n"
    "    PRIMARY KEY (resource_id, key)\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE INDEX tags_key_value ON tags (key, value);\n"
    "\n"
    "PRAGMA application_id = 1802071150;\n"; /* REGISTRY_APPLICATION_ID */

/* Images (src/registry/images.c).  Ids are "ami-" and 17 hex digits;
 * kernel and ramdisk ids "aki-"/"ari-".  Times are unix milliseconds.
 * Disabled is a state, public is the launch permission group "all".  A
 * name is unique per owner among images that are not deregistered. */
static const char migration_2[] =
    "CREATE TABLE images (\n"
    "    id                  TEXT NOT NULL PRIMARY KEY\n"
    "                        CHECK (length(id) = 21 AND substr(id, 1, 4) = 'ami-'\n"
    "                               AND substr(id, 5) NOT GLOB '*[^0-9a-f]*'),\n"
    "    owner               TEXT NOT NULL\n"
    "                        CHECK (length(owner) = 12 AND owner NOT GLOB '*[^0-9]*'),\n"
    "    name                TEXT NOT NULL\n"
    "                        CHECK (length(name) BETWEEN 3 AND 128\n"
    "                               AND name NOT GLOB '*[^]A-Za-z0-9()[. /''@_-]*'),\n"
    "    description         TEXT CHECK (description IS NULL OR length(description) <= 255),\n"
    "    architecture        TEXT NOT NULL\n"
    "                        CHECK (architecture IN ('i386', 'x86_64', 'arm64',\n"
    "                                                'x86_64_mac', 'arm64_mac')),\n"
    "    boot_mode           TEXT\n"
    "                        CHECK (boot_mode IN ('legacy-bios', 'uefi', 'uefi-preferred')),\n"
    "    root_device_name    TEXT NOT NULL\n"
    "                        CHECK (length(root_device_name) BETWEEN 1 AND 64),\n"
    "    root_device_type    TEXT NOT NULL CHECK (root_device_type = 'ebs'),\n"
    "    virtualization_type TEXT NOT NULL\n"
    "                        CHECK (virtualization_type IN ('hvm', 'paravirtual')),\n"
    "    ena_support         INTEGER NOT NULL DEFAULT 0 CHECK (ena_support IN (0, 1)),\n"
    "    sriov_net_support   TEXT CHECK (sriov_net_support = 'simple'),\n"
    "    imds_support        TEXT CHECK (imds_support = 'v2.0'),\n"
    "    tpm_support         TEXT CHECK (tpm_support = 'v2.0'),\n"
    "    kernel_id           TEXT\n"
    "                        CHECK (kernel_id IS NULL OR (length(kernel_id) = 21\n"
    "                               AND substr(kernel_id, 1, 4) = 'aki-'\n"
    "                               AND substr(kernel_id, 5) NOT GLOB '*[^0-9a-f]*')),\n"
    "    ramdisk_id          TEXT\n"
    "                        CHECK (ramdisk_id IS NULL OR (length(ramdisk_id) = 21\n"
    "                               AND substr(ramdisk_id, 1, 4) = 'ari-'\n"
    "                               AND substr(ramdisk_id, 5) NOT GLOB '*[^0-9a-f]*')),\n"
    "    state               TEXT NOT NULL\n"
    "                        CHECK (state IN ('pending', 'available', 'invalid',\n"
    "                                         'deregistered', 'transient', 'failed',\n"
    "                                         'error', 'disabled')),\n"
    "    state_reason_code   TEXT,\n"
    "    state_reason_message TEXT,\n"
    "    creation_date       INTEGER NOT NULL CHECK (creation_date >= 0),\n"
    "    deprecation_time    INTEGER CHECK (deprecation_time > 0),\n"
    "    deregistration_protection INTEGER NOT NULL DEFAULT 0\n"
    "                        CHECK (deregistration_protection IN (0, 1)),\n"
    "    deregistration_cooldown INTEGER NOT NULL DEFAULT 0\n"
    "                        CHECK (deregistration_cooldown IN (0, 1)),\n"
    "    deregistration_blocked_until INTEGER CHECK (deregistration_blocked_until > 0),\n"
    "    source_image_id     TEXT\n"
    "                        CHECK (source_image_id IS NULL OR (length(source_image_id) = 21\n"
    "                               AND substr(source_image_id, 1, 4) = 'ami-'\n"
    "                               AND substr(source_image_id, 5) NOT GLOB '*[^0-9a-f]*')),\n"
    "    source_region       TEXT\n"
    "                        CHECK (source_region IS NULL\n"
    "                               OR length(source_region) BETWEEN 1 AND 64),\n"
    "    last_launched_time  INTEGER CHECK (last_launched_time > 0),\n"
    "    CHECK (deregistration_cooldown = 0 OR deregistration_protection = 1)\n"
    ") STRICT;\n"
    "\n"
    "CREATE UNIQUE INDEX images_owner_name ON images (owner, name)\n"
    "    WHERE state <> 'deregistered';\n"
    "CREATE INDEX images_creation ON images (creation_date, id);\n"
    "CREATE INDEX images_owner ON images (owner, creation_date, id);\n"
    "CREATE INDEX images_name ON images (name);\n"
    "\n"
    "CREATE TABLE image_block_devices (\n"
    "    image_id              TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,\n"
    "    position              INTEGER NOT NULL CHECK (position >= 0),\n"
    "    device_name           TEXT NOT NULL\n"
    "                          CHECK (length(device_name) BETWEEN 1 AND 64),\n"
    "    snapshot_id           TEXT\n"
    "                          CHECK (snapshot_id IS NULL OR (length(snapshot_id) = 22\n"
    "                                 AND substr(snapshot_id, 1, 5) = 'snap-'\n"
    "                                 AND substr(snapshot_id, 6) NOT GLOB '*[^0-9a-f]*')),\n"
    "    volume_size_gib       INTEGER CHECK (volume_size_gib BETWEEN 1 AND 65536),\n"
    "    volume_type           TEXT\n"
    "                          CHECK (volume_type IN ('standard', 'io1', 'io2', 'gp2',\n"
    "                                                 'gp3', 'sc1', 'st1')),\n"
    "    delete_on_termination INTEGER NOT NULL DEFAULT 1\n"
    "                          CHECK (delete_on_termination IN (0, 1)),\n"
    "    encrypted             INTEGER NOT NULL DEFAULT 0 CHECK (encrypted IN (0, 1)),\n"
    "    iops                  INTEGER CHECK (iops > 0),\n"
    "    throughput            INTEGER CHECK (throughput > 0),\n"
    "    virtual_name          TEXT\n"
    "                          CHECK (virtual_name IS NULL OR (virtual_name GLOB 'ephemeral[0-9]'\n"
    "                                 OR virtual_name GLOB 'ephemeral[1][0-9]'\n"
    "                                 OR virtual_name GLOB 'ephemeral2[0-3]')),\n"
    "    no_device             INTEGER NOT NULL DEFAULT 0 CHECK (no_device IN (0, 1)),\n"
    "    PRIMARY KEY (image_id, position),\n"
    "    UNIQUE (image_id, device_name)\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE INDEX image_block_devices_snapshot ON image_block_devices (snapshot_id);\n"
    "\n"
    "CREATE TABLE image_launch_permissions (\n"
    "    image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,\n"
    "    kind     TEXT NOT NULL CHECK (kind IN ('user', 'group')),\n"
    "    value    TEXT NOT NULL\n"
    "             CHECK ((kind = 'group' AND value = 'all')\n"
    "                    OR (kind = 'user' AND length(value) = 12\n"
    "                        AND value NOT GLOB '*[^0-9]*')),\n"
    "    PRIMARY KEY (image_id, kind, value)\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE INDEX image_launch_permissions_value ON image_launch_permissions (kind, value);\n";

/* Snapshot sharing (src/registry/snapshot-permissions.c): EC2's
 * createVolumePermission.  A user permission names a 12-digit account, the
 * group "all" makes the snapshot public.  There is no foreign key to
 * snapshots (migration 1 made no parent key of it, and SQLite cannot add
 * one to an existing table): registry_snapshot_delete() deletes a
 * snapshot's permissions in the transaction that deletes its row. */
static const char migration_3[] =
    "CREATE TABLE snapshot_permissions (\n"
    "    snapshot_id TEXT NOT NULL\n"
    "                CHECK (length(snapshot_id) = 22 AND substr(snapshot_id, 1, 5) = 'snap-'\n"
    "                       AND substr(snapshot_id, 6) NOT GLOB '*[^0-9a-f]*'),\n"
    "    kind        TEXT NOT NULL CHECK (kind IN ('user', 'group')),\n"
    "    value       TEXT NOT NULL\n"
    "                CHECK ((kind = 'group' AND value = 'all')\n"
    "                       OR (kind = 'user' AND length(value) = 12\n"
    "                           AND value NOT GLOB '*[^0-9]*')),\n"
    "    PRIMARY KEY (snapshot_id, kind, value)\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE INDEX snapshot_permissions_value ON snapshot_permissions (kind, value);\n";

/* Copy jobs and ClientToken idempotency (src/registry/jobs.c).  A job row
 * is work not yet done: CopyImage and CopySnapshot insert it in the
 * transaction that registers their pending rows, the job runner deletes it
 * in the transaction that makes them available or failed.  job_items
 * records, per snapshot to copy, the source's block map: gc in the source
 * region treats those maps as roots, so deleting the source while a copy
 * is pending loses nothing.  client_tokens holds the first result of each
 * (account, ClientToken), with a digest of the request's parameters. */
static const char migration_4[] =
    "CREATE TABLE jobs (\n"
    "    id            TEXT NOT NULL PRIMARY KEY\n"
    "                  CHECK ((length(id) = 21 AND substr(id, 1, 4) = 'ami-'\n"
    "                          AND substr(id, 5) NOT GLOB '*[^0-9a-f]*')\n"
    "                         OR (length(id) = 22 AND substr(id, 1, 5) = 'snap-'\n"
    "                          AND substr(id, 6) NOT GLOB '*[^0-9a-f]*')),\n"
    "    kind          TEXT NOT NULL CHECK (kind IN ('copy-image', 'copy-snapshot')),\n"
    "    owner         TEXT NOT NULL\n"
    "                  CHECK (length(owner) = 12 AND owner NOT GLOB '*[^0-9]*'),\n"
    "    source_region TEXT NOT NULL CHECK (length(source_region) BETWEEN 1 AND 64),\n"
    "    source_id     TEXT NOT NULL CHECK (length(source_id) BETWEEN 21 AND 22),\n"
    "    created       INTEGER NOT NULL CHECK (created >= 0)\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE INDEX jobs_source_region ON jobs (source_region);\n"
    "\n"
    "CREATE TABLE job_items (\n"
    "    job_id             TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,\n"
    "    position           INTEGER NOT NULL CHECK (position >= 0),\n"
    "    source_snapshot_id TEXT NOT NULL\n"
    "                       CHECK (length(source_snapshot_id) = 22\n"
    "                              AND substr(source_snapshot_id, 1, 5) = 'snap-'\n"
    "                              AND substr(source_snapshot_id, 6) NOT GLOB '*[^0-9a-f]*'),\n"
    "    source_map_id      TEXT NOT NULL\n"
    "                       CHECK (length(source_map_id) = 64\n"
    "                              AND source_map_id NOT GLOB '*[^0-9a-f]*'),\n"
    "    target_snapshot_id TEXT NOT NULL\n"
    "                       CHECK (length(target_snapshot_id) = 22\n"
    "                              AND substr(target_snapshot_id, 1, 5) = 'snap-'\n"
    "                              AND substr(target_snapshot_id, 6) NOT GLOB '*[^0-9a-f]*'),\n"
    "    PRIMARY KEY (job_id, position)\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE TABLE client_tokens (\n"
    "    account     TEXT NOT NULL\n"
    "                CHECK (length(account) = 12 AND account NOT GLOB '*[^0-9]*'),\n"
    "    token       TEXT NOT NULL CHECK (length(token) BETWEEN 1 AND 64),\n"
    "    action      TEXT NOT NULL CHECK (length(action) BETWEEN 1 AND 64),\n"
    "    params      TEXT NOT NULL\n"
    "                CHECK (length(params) = 64 AND params NOT GLOB '*[^0-9a-f]*'),\n"
    "    resource_id TEXT NOT NULL CHECK (length(resource_id) BETWEEN 1 AND 31),\n"
    "    created     INTEGER NOT NULL CHECK (created >= 0),\n"
    "    PRIMARY KEY (account, token)\n"
    ") STRICT, WITHOUT ROWID;\n";

/* Uploads through the EBS direct API (src/registry/ebs-uploads.c): per
 * snapshot started with StartSnapshot, its ClientToken (unique per owner;
 * SQLite lets several rows have none), a digest of the request's
 * parameters (a repeated token with other parameters is a conflict) and
 * its Timeout.  The row outlives the upload so that a retried
 * StartSnapshot finds its snapshot; the blocks themselves are staged
 * outside the registry (docs/formats.md). */
static const char migration_5[] =
    "CREATE TABLE ebs_uploads (\n"
    "    snapshot_id     TEXT NOT NULL PRIMARY KEY\n"
    "                    CHECK (length(snapshot_id) = 22 AND substr(snapshot_id, 1, 5) = 'snap-'\n"
    "                           AND substr(snapshot_id, 6) NOT GLOB '*[^0-9a-f]*'),\n"
    "    owner           TEXT NOT NULL\n"
    "                    CHECK (length(owner) = 12 AND owner NOT GLOB '*[^0-9]*'),\n"
    "    client_token    TEXT CHECK (client_token IS NULL\n"
    "                                OR length(client_token) BETWEEN 1 AND 255),\n"
    "    request_digest  TEXT NOT NULL\n"
    "                    CHECK (length(request_digest) = 64\n"
    "                           AND request_digest NOT GLOB '*[^0-9a-f]*'),\n"
    "    timeout_minutes INTEGER NOT NULL CHECK (timeout_minutes BETWEEN 10 AND 4320),\n"
    "    UNIQUE (owner, client_token)\n"
    ") STRICT, WITHOUT ROWID;\n";

/* Volumes (src/registry/volumes.c).  Ids are "vol-" and 17 hex digits;
 * sizes in GiB (gp3: 1..16384); times unix milliseconds.  base_map_id is
 * the block map of the snapshot the volume was created from: gc keeps it
 * while the row exists, even if the snapshot is deleted.  The attachment
 * columns (instance, device, time) are for the instances issue. */
static const char migration_6[] =
    "CREATE TABLE volumes (\n"
    "    id                TEXT NOT NULL PRIMARY KEY\n"
    "                      CHECK (length(id) = 21 AND substr(id, 1, 4) = 'vol-'\n"
    "                             AND substr(id, 5) NOT GLOB '*[^0-9a-f]*'),\n"
    "    owner             TEXT NOT NULL\n"
    "                      CHECK (length(owner) = 12 AND owner NOT GLOB '*[^0-9]*'),\n"
    "    availability_zone TEXT NOT NULL CHECK (length(availability_zone) BETWEEN 1 AND 64),\n"
    "    size_gib          INTEGER NOT NULL CHECK (size_gib BETWEEN 1 AND 16384),\n"
    "    snapshot_id       TEXT\n"
    "                      CHECK (snapshot_id IS NULL OR (length(snapshot_id) = 22\n"
    "                             AND substr(snapshot_id, 1, 5) = 'snap-'\n"
    "                             AND substr(snapshot_id, 6) NOT GLOB '*[^0-9a-f]*')),\n"
    "    base_map_id       TEXT\n"
    "                      CHECK (base_map_id IS NULL OR (length(base_map_id) = 64\n"
    "                             AND base_map_id NOT GLOB '*[^0-9a-f]*')),\n"
    "    state             TEXT NOT NULL\n"
    "                      CHECK (state IN ('creating', 'available', 'in-use', 'deleting',\n"
    "                                       'deleted', 'error')),\n"
    "    create_time       INTEGER NOT NULL CHECK (create_time >= 0),\n"
    "    volume_type       TEXT NOT NULL CHECK (volume_type = 'gp3'),\n"
    "    iops              INTEGER NOT NULL CHECK (iops >= 0),\n"
    "    throughput        INTEGER NOT NULL CHECK (throughput >= 0),\n"
    "    instance_id       TEXT CHECK (instance_id IS NULL OR length(instance_id) BETWEEN 3 AND 31),\n"
    "    device            TEXT CHECK (device IS NULL OR length(device) BETWEEN 1 AND 64),\n"
    "    attach_time       INTEGER CHECK (attach_time > 0),\n"
    "    CHECK ((snapshot_id IS NULL) = (base_map_id IS NULL)),\n"
    "    CHECK ((instance_id IS NULL) = (device IS NULL))\n"
    ") STRICT;\n"
    "\n"
    "CREATE INDEX volumes_create ON volumes (create_time, id);\n"
    "CREATE INDEX volumes_owner ON volumes (owner, create_time, id);\n"
    "CREATE INDEX volumes_snapshot ON volumes (snapshot_id);\n";

/* The parent's block map of an EBS upload (src/registry/ebs-uploads.c),
 * recorded by StartSnapshot with ParentSnapshotId: completion imports the
 * staged blocks over that map, and gc keeps it (and its chunks) while the
 * upload is pending, so deleting the parent snapshot meanwhile loses
 * nothing.  NULL for uploads without a parent and for rows of migration 5. */
static const char migration_7[] =
    "ALTER TABLE ebs_uploads ADD COLUMN parent_map_id TEXT\n"
    "    CHECK (parent_map_id IS NULL\n"
    "           OR (length(parent_map_id) = 64 AND parent_map_id NOT GLOB '*[^0-9a-f]*'));\n";

/* Snapshots of volumes as jobs, and the volume a snapshot was made from.
 * snapshots.volume_id is the volume CreateSnapshot read (NULL for imported,
 * copied and uploaded snapshots: DescribeSnapshots says vol-ffffffff).
 * jobs gains the kind 'volume-snapshot' (src/service/volumes.c): its id is
 * the new snap-, its source the vol-, and its one item names the block map
 * captured at request time (gc keeps it while the job is pending).  SQLite
 * cannot change a CHECK constraint, so jobs and job_items are rebuilt:
 * new tables, the rows copied, the old tables dropped (items first, so the
 * drop of jobs cascades to nothing), the new ones renamed (SQLite >= 3.26
 * renames the foreign key's target with them). */
static const char migration_8[] =
    "ALTER TABLE snapshots ADD COLUMN volume_id TEXT\n"
    "    CHECK (volume_id IS NULL OR (length(volume_id) = 21 AND substr(volume_id, 1, 4) = 'vol-'\n"
    "           AND substr(volume_id, 5) NOT GLOB '*[^0-9a-f]*'));\n"
    "\n"
    "CREATE TABLE jobs_v8 (\n"
    "    id            TEXT NOT NULL PRIMARY KEY\n"
    "                  CHECK ((length(id) = 21 AND substr(id, 1, 4) = 'ami-'\n"
    "                          AND substr(id, 5) NOT GLOB '*[^0-9a-f]*')\n"
    "                         OR (length(id) = 22 AND substr(id, 1, 5) = 'snap-'\n"
    "                          AND substr(id, 6) NOT GLOB '*[^0-9a-f]*')),\n"
    "    kind          TEXT NOT NULL\n"
    "                  CHECK (kind IN ('copy-image', 'copy-snapshot', 'volume-snapshot')),\n"
    "    owner         TEXT NOT NULL\n"
    "                  CHECK (length(owner) = 12 AND owner NOT GLOB '*[^0-9]*'),\n"
    "    source_region TEXT NOT NULL CHECK (length(source_region) BETWEEN 1 AND 64),\n"
    "    source_id     TEXT NOT NULL CHECK (length(source_id) BETWEEN 21 AND 22),\n"
    "    created       INTEGER NOT NULL CHECK (created >= 0)\n"
    ") STRICT, WITHOUT ROWID;\n"
    "INSERT INTO jobs_v8 SELECT id, kind, owner, source_region, source_id, created FROM jobs;\n"
    "\n"
    "CREATE TABLE job_items_v8 (\n"
    "    job_id             TEXT NOT NULL REFERENCES jobs_v8 (id) ON DELETE CASCADE,\n"
    "    position           INTEGER NOT NULL CHECK (position >= 0),\n"
    "    source_snapshot_id TEXT NOT NULL\n"
    "                       CHECK (length(source_snapshot_id) = 22\n"
    "                              AND substr(source_snapshot_id, 1, 5) = 'snap-'\n"
    "                              AND substr(source_snapshot_id, 6) NOT GLOB '*[^0-9a-f]*'),\n"
    "    source_map_id      TEXT NOT NULL\n"
    "                       CHECK (length(source_map_id) = 64\n"
    "                              AND source_map_id NOT GLOB '*[^0-9a-f]*'),\n"
    "    target_snapshot_id TEXT NOT NULL\n"
    "                       CHECK (length(target_snapshot_id) = 22\n"
    "                              AND substr(target_snapshot_id, 1, 5) = 'snap-'\n"
    "                              AND substr(target_snapshot_id, 6) NOT GLOB '*[^0-9a-f]*'),\n"
    "    PRIMARY KEY (job_id, position)\n"
    ") STRICT, WITHOUT ROWID;\n"
    "INSERT INTO job_items_v8 SELECT job_id, position, source_snapshot_id, source_map_id,\n"
    "    target_snapshot_id FROM job_items;\n"
    "\n"
    "DROP TABLE job_items;\n"
    "DROP TABLE jobs;\n"
    "ALTER TABLE jobs_v8 RENAME TO jobs;\n"
    "ALTER TABLE job_items_v8 RENAME TO job_items;\n"
    "CREATE INDEX jobs_source_region ON jobs (source_region);\n";

/* Instances, key pairs and security groups (src/registry/instances.c).
 * Instance ids are "i-" and 17 hex digits, reservations "r-", key pairs
 * "key-", security groups "sg-".  address is the instance's own loopback
 * address (127.x.y.z, docs/api.md): unique among the instances that are not
 * terminated (a terminated row stays visible a while, as in EC2, but gives
 * its address back).  user_data is the decoded bytes (at most 16 KiB, EC2's
 * limit).  The rules of a security group are stored, not enforced (user
 * networking only forwards port 22 to each instance's own address). */
static const char migration_9[] =
    "CREATE TABLE instances (\n"
    "    id                TEXT NOT NULL PRIMARY KEY\n"
    "                      CHECK (length(id) = 19 AND substr(id, 1, 2) = 'i-'\n"
    "                             AND substr(id, 3) NOT GLOB '*[^0-9a-f]*'),\n"
    "    owner             TEXT NOT NULL\n"
    "                      CHECK (length(owner) = 12 AND owner NOT GLOB '*[^0-9]*'),\n"
    "    reservation_id    TEXT NOT NULL\n"
    "                      CHECK (length(reservation_id) = 19 AND substr(reservation_id, 1, 2) = 'r-'\n"
    "                             AND substr(reservation_id, 3) NOT GLOB '*[^0-9a-f]*'),\n"
    "    launch_index      INTEGER NOT NULL CHECK (launch_index >= 0),\n"
    "    image_id          TEXT NOT NULL\n"
    "                      CHECK (length(image_id) = 21 AND substr(image_id, 1, 4) = 'ami-'\n"
    "                             AND substr(image_id, 5) NOT GLOB '*[^0-9a-f]*'),\n"
    "    instance_type     TEXT NOT NULL CHECK (length(instance_type) BETWEEN 1 AND 32),\n"
    "    state             TEXT NOT NULL\n"
    "                      CHECK (state IN ('pending', 'running', 'shutting-down', 'terminated',\n"
    "                                       'stopping', 'stopped')),\n"
    "    reason_code       TEXT CHECK (reason_code IS NULL OR length(reason_code) BETWEEN 1 AND 64),\n"
    "    reason_message    TEXT CHECK (reason_message IS NULL OR length(reason_message) <= 1024),\n"
    "    launch_time       INTEGER NOT NULL CHECK (launch_time >= 0),\n"
    "    availability_zone TEXT NOT NULL CHECK (length(availability_zone) BETWEEN 1 AND 64),\n"
    "    key_name          TEXT CHECK (key_name IS NULL OR length(key_name) BETWEEN 1 AND 255),\n"
    "    user_data         BLOB CHECK (user_data IS NULL OR length(user_data) <= 16384),\n"
    "    address           TEXT NOT NULL\n"
    "                      CHECK (length(address) BETWEEN 9 AND 15 AND address GLOB '127.*'\n"
    "                             AND address NOT GLOB '*[^0-9.]*'),\n"
    "    root_device_name  TEXT NOT NULL CHECK (length(root_device_name) BETWEEN 1 AND 64),\n"
    "    root_volume_id    TEXT\n"
    "                      CHECK (root_volume_id IS NULL OR (length(root_volume_id) = 21\n"
    "                             AND substr(root_volume_id, 1, 4) = 'vol-'\n"
    "                             AND substr(root_volume_id, 5) NOT GLOB '*[^0-9a-f]*')),\n"
    "    root_delete_on_termination INTEGER NOT NULL CHECK (root_delete_on_termination IN (0, 1)),\n"
    "    http_tokens       TEXT NOT NULL CHECK (http_tokens IN ('optional', 'required')),\n"
    "    http_endpoint     TEXT NOT NULL CHECK (http_endpoint IN ('enabled', 'disabled')),\n"
    "    http_hop_limit    INTEGER NOT NULL CHECK (http_hop_limit BETWEEN 1 AND 64),\n"
    "    client_token      TEXT CHECK (client_token IS NULL\n"
    "                                  OR length(client_token) BETWEEN 1 AND 64)\n"
    ") STRICT;\n"
    "\n"
    "CREATE UNIQUE INDEX instances_address ON instances (address) WHERE state <> 'terminated';\n"
    "CREATE INDEX instances_launch ON instances (launch_time, id);\n"
    "CREATE INDEX instances_owner ON instances (owner, launch_time, id);\n"
    "CREATE INDEX instances_reservation ON instances (reservation_id);\n"
    "CREATE UNIQUE INDEX instances_client_token ON instances (owner, client_token, launch_index)\n"
    "    WHERE client_token IS NOT NULL;\n"
    "\n"
    "CREATE TABLE key_pairs (\n"
    "    id           TEXT NOT NULL PRIMARY KEY\n"
    "                 CHECK (length(id) = 21 AND substr(id, 1, 4) = 'key-'\n"
    "                        AND substr(id, 5) NOT GLOB '*[^0-9a-f]*'),\n"
    "    owner        TEXT NOT NULL\n"
    "                 CHECK (length(owner) = 12 AND owner NOT GLOB '*[^0-9]*'),\n"
    "    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 255),\n"
    "    key_type     TEXT NOT NULL CHECK (key_type IN ('rsa', 'ed25519')),\n"
    "    fingerprint  TEXT NOT NULL CHECK (length(fingerprint) BETWEEN 1 AND 128),\n"
    "    public_key   TEXT NOT NULL CHECK (length(public_key) BETWEEN 1 AND 16384),\n"
    "    create_time  INTEGER NOT NULL CHECK (create_time >= 0),\n"
    "    UNIQUE (owner, name)\n"
    ") STRICT;\n"
    "\n"
    "CREATE TABLE security_groups (\n"
    "    id           TEXT NOT NULL PRIMARY KEY\n"
    "                 CHECK (length(id) = 20 AND substr(id, 1, 3) = 'sg-'\n"
    "                        AND substr(id, 4) NOT GLOB '*[^0-9a-f]*'),\n"
    "    owner        TEXT NOT NULL\n"
    "                 CHECK (length(owner) = 12 AND owner NOT GLOB '*[^0-9]*'),\n"
    "    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 255),\n"
    "    description  TEXT NOT NULL CHECK (length(description) BETWEEN 1 AND 255),\n"
    "    create_time  INTEGER NOT NULL CHECK (create_time >= 0),\n"
    "    UNIQUE (owner, name)\n"
    ") STRICT;\n"
    "\n"
    "CREATE TABLE security_group_rules (\n"
    "    group_id     TEXT NOT NULL REFERENCES security_groups (id) ON DELETE CASCADE,\n"
    "    ip_protocol  TEXT NOT NULL CHECK (ip_protocol IN ('tcp', 'udp', 'icmp', '-1')),\n"
    "    from_port    INTEGER NOT NULL CHECK (from_port BETWEEN -1 AND 65535),\n"
    "    to_port      INTEGER NOT NULL CHECK (to_port BETWEEN -1 AND 65535),\n"
    "    cidr_ip      TEXT NOT NULL CHECK (length(cidr_ip) BETWEEN 9 AND 18),\n"
    "    PRIMARY KEY (group_id, ip_protocol, from_port, to_port, cidr_ip)\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE TABLE instance_security_groups (\n"
    "    instance_id  TEXT NOT NULL REFERENCES instances (id) ON DELETE CASCADE,\n"
    "    group_id     TEXT NOT NULL REFERENCES security_groups (id),\n"
    "    PRIMARY KEY (instance_id, group_id)\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE INDEX instance_security_groups_group ON instance_security_groups (group_id);\n";

/* Migration 10: when an instance became terminated (unix ms), so that
 * terminated instances vanish after a retention period as in EC2
 * (docs/vm.md, "Instances").  Rows terminated before the migration count
 * from the migration. */
static const char migration_10[] =
    "ALTER TABLE instances ADD COLUMN terminated_time INTEGER\n"
    "    CHECK (terminated_time IS NULL OR terminated_time >= 0);\n"
    "UPDATE instances SET terminated_time = CAST(strftime('%s', 'now') AS INTEGER) * 1000\n"
    "    WHERE state = 'terminated';\n";

/* Migration 11: image baking (issue 6; src/registry/bake.c,
 * docs/baking.md).  bake_builds: one row per build with the identity of the
 * process running it (pid, boot id, start time in clock ticks since boot)
 * so that the janitor can tell a dead build from a live one.
 * bake_journal: the resources a build makes, recorded `pending` before
 * each is created, then `created` with its id, then `released` (kept as
 * output) or `undone`; `error` keeps the message of a failed undo.
 * bake_layers: the layer cache, key (64 hex) to the snapshot holding it. */
static const char migration_11[] =
    "CREATE TABLE bake_builds (\n"
    "    id              TEXT NOT NULL PRIMARY KEY\n"
    "                    CHECK (length(id) = 21 AND substr(id, 1, 4) = 'bld-'\n"
    "                           AND substr(id, 5) NOT GLOB '*[^0-9a-f]*'),\n"
    "    owner           TEXT NOT NULL\n"
    "                    CHECK (length(owner) = 12 AND owner NOT GLOB '*[^0-9]*'),\n"
    "    template_digest TEXT NOT NULL\n"
    "                    CHECK (length(template_digest) = 64\n"
    "                           AND template_digest NOT GLOB '*[^0-9a-f]*'),\n"
    "    state           TEXT NOT NULL\n"
    "                    CHECK (state IN ('running', 'succeeded', 'failed', 'cleaned')),\n"
    "    pid             INTEGER NOT NULL CHECK (pid > 0),\n"
    "    boot_id         TEXT NOT NULL CHECK (length(boot_id) BETWEEN 1 AND 64),\n"
    "    start_time      INTEGER NOT NULL CHECK (start_time >= 0),\n"
    "    created         INTEGER NOT NULL CHECK (created >= 0),\n"
    "    updated         INTEGER NOT NULL CHECK (updated >= 0)\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE INDEX bake_builds_state ON bake_builds (state);\n"
    "\n"
    "CREATE TABLE bake_journal (\n"
    "    build_id    TEXT NOT NULL REFERENCES bake_builds (id) ON DELETE CASCADE,\n"
    "    seq         INTEGER NOT NULL CHECK (seq >= 1),\n"
    "    kind        TEXT NOT NULL\n"
    "                CHECK (kind IN ('instance', 'volume', 'snapshot', 'image')),\n"
    "    resource_id TEXT NOT NULL CHECK (length(resource_id) <= 31),\n"
    "    state       TEXT NOT NULL\n"
    "                CHECK (state IN ('pending', 'created', 'released', 'undone')),\n"
    "    error       TEXT CHECK (error IS NULL OR length(error) <= 1024),\n"
    "    updated     INTEGER NOT NULL CHECK (updated >= 0),\n"
    "    CHECK ((state = 'pending') = (resource_id = '') OR state = 'undone'),\n"
    "    PRIMARY KEY (build_id, seq)\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE TABLE bake_layers (\n"
    "    key         TEXT NOT NULL PRIMARY KEY\n"
    "                CHECK (length(key) = 64 AND key NOT GLOB '*[^0-9a-f]*'),\n"
    "    snapshot_id TEXT NOT NULL\n"
    "                CHECK (length(snapshot_id) = 22 AND substr(snapshot_id, 1, 5) = 'snap-'\n"
    "                       AND substr(snapshot_id, 6) NOT GLOB '*[^0-9a-f]*'),\n"
    "    parent_key  TEXT CHECK (parent_key IS NULL OR (length(parent_key) = 64\n"
    "                            AND parent_key NOT GLOB '*[^0-9a-f]*')),\n"
    "    summary     TEXT NOT NULL CHECK (length(summary) <= 256),\n"
    "    created     INTEGER NOT NULL CHECK (created >= 0),\n"
    "    last_used   INTEGER NOT NULL CHECK (last_used >= 0),\n"
    "    size        INTEGER NOT NULL CHECK (size >= 0)\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE INDEX bake_layers_last_used ON bake_layers (last_used);\n";

/* Bake distribution (src/registry/bake.c, src/bake/distribute.c): what a
 * build publishes (its name, region, image and distribution spec as JSON,
 * NULL until recorded) and the state of its image in each region. */
static const char migration_12[] =
    "ALTER TABLE bake_builds ADD COLUMN name TEXT\n"
    "    CHECK (name IS NULL OR length(name) BETWEEN 1 AND 256);\n"
    "ALTER TABLE bake_builds ADD COLUMN region TEXT\n"
    "    CHECK (region IS NULL OR (length(region) BETWEEN 1 AND 64\n"
    "                              AND region NOT GLOB '*[^a-z0-9-]*'));\n"
    "ALTER TABLE bake_builds ADD COLUMN image_id TEXT\n"
    "    CHECK (image_id IS NULL OR (length(image_id) = 21 AND substr(image_id, 1, 4) = 'ami-'\n"
    "                                AND substr(image_id, 5) NOT GLOB '*[^0-9a-f]*'));\n"
    "ALTER TABLE bake_builds ADD COLUMN distribution TEXT\n"
    "    CHECK (distribution IS NULL OR length(distribution) <= 65536);\n"
    "\n"
    "CREATE TABLE bake_outputs (\n"
    "    build_id TEXT NOT NULL REFERENCES bake_builds (id) ON DELETE CASCADE,\n"
    "    seq      INTEGER NOT NULL CHECK (seq >= 0),\n"
    "    region   TEXT NOT NULL\n"
    "             CHECK (length(region) BETWEEN 1 AND 64 AND region NOT GLOB '*[^a-z0-9-]*'),\n"
    "    image_id TEXT NOT NULL\n"
    "             CHECK (image_id = '' OR (length(image_id) = 21\n"
    "                    AND substr(image_id, 1, 4) = 'ami-'\n"
    "                    AND substr(image_id, 5) NOT GLOB '*[^0-9a-f]*')),\n"
    "    state    TEXT NOT NULL CHECK (state IN ('pending', 'copying', 'done', 'failed')),\n"
    "    attempts INTEGER NOT NULL CHECK (attempts >= 0),\n"
    "    error    TEXT CHECK (error IS NULL OR length(error) <= 1024),\n"
    "    started  INTEGER NOT NULL CHECK (started >= 0),\n"
    "    updated  INTEGER NOT NULL CHECK (updated >= 0),\n"
    "    CHECK (state != 'done' OR image_id != ''),\n"
    "    PRIMARY KEY (build_id, region),\n"
    "    UNIQUE (build_id, seq)\n"
    ") STRICT, WITHOUT ROWID;\n";

static const struct reg_migration migrations[] = {
    { 1, "snapshots, tags and settings", migration_1 },
    { 2, "images, block devices and launch permissions", migration_2 },
    { 3, "snapshot create-volume permissions", migration_3 },
    { 4, "copy jobs and client tokens", migration_4 },
    { 5, "EBS direct API uploads", migration_5 },
    { 6, "volumes", migration_6 },
    { 7, "the parent block map of EBS uploads", migration_7 },
    { 8, "volume snapshot jobs, the volume of a snapshot", migration_8 },
    { 9, "instances, key pairs and security groups", migration_9 },
    { 10, "the time an instance became terminated", migration_10 },
    { 11, "image baking: builds, their journal, the layer cache", migration_11 },
    { 12, "bake distribution: what a build publishes, per region", migration_12 },
};

_Static_assert(REGISTRY_APPLICATION_ID == 1802071150, "migration 1 stamps this application id");

const struct reg_schema reg_registry_schema = {
    .what = "registry",
    .application_id = REGISTRY_APPLICATION_ID,
    .migrations = migrations,
    .n_migrations = ARRAY_SIZE(migrations),
};

int reg_schema_latest(const struct reg_schema *schema)
{
    return schema->migrations[schema->n_migrations - 1].version;
}

int reg_migrations_latest(void)
{
    return reg_schema_latest(&reg_registry_schema);
}

static int pragma_int(struct registry *reg, const char *sql, const char *what, int *ret)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r, rc;

    r = reg_prepare(reg, sql, &st);
    if (r < 0)
        return r;
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return reg_fail(reg, rc == SQLITE_DONE ? SQLITE_ERROR : rc,
                        "cannot read the %s of %s '%s'", what, reg->schema->what, reg->path);
    *ret = sqlite3_column_int(st, 0);
    return 0;
}

int reg_user_version(struct registry *reg, int *ret)
{
    return pragma_int(reg, "PRAGMA user_version", "schema version", ret);
}

static int refuse_newer(struct registry *reg, int version)
{
    return error_set(EPROTO,
                     "%s '%s' has schema version %d, newer than this kiln knows (%d): "
                     "upgrade kiln",
                     reg->schema->what, reg->path, version, reg_schema_latest(reg->schema));
}

/* Before migrating: is this file a registry, or empty enough to become
 * one? */
static int check_identity(struct registry *reg, int version)
{
    int app = 0, objects = 0, r;

    if (version > 0) {
        r = pragma_int(reg, "PRAGMA application_id", "application id", &app);
        if (r < 0)
            return r;
        if (app != reg->schema->application_id)
            return error_set(EBADMSG,
                             "'%s' is not a kiln %s (application id %#x, schema version %d)",
                             reg->path, reg->schema->what, (unsigned)app, version);
        return 0;
    }
    r = pragma_int(reg, "SELECT count(*) FROM sqlite_schema", "table count", &objects);
    if (r < 0)
        return r;
    if (objects > 0)
        return error_set(EBADMSG, "'%s' is not a kiln %s: it holds tables but no schema version",
                         reg->path, reg->schema->what);
    return 0;
}

static int apply(struct registry *reg, const struct reg_migration *m)
{
    char set_version[64];
    int current = 0, r, rc;

    r = registry_begin(reg);
    if (r < 0)
        return r;
    /* Reread under the write lock: another process may have migrated. */
    r = reg_user_version(reg, &current);
    if (r < 0)
        goto fail;
    if (current > reg_schema_latest(reg->schema)) {
        r = refuse_newer(reg, current);
        goto fail;
    }
    if (current >= m->version) {
        registry_rollback(reg);
        return 0;
    }
    if (current == 0) {
        r = check_identity(reg, 0);
        if (r < 0)
            goto fail;
    }
    if (current != m->version - 1) {
        r = error_set(EBADMSG, "%s '%s' is at schema version %d, cannot apply migration %d",
                      reg->schema->what, reg->path, current, m->version);
        goto fail;
    }

    rc = sqlite3_exec(reg->db, m->sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        r = reg_fail(reg, rc, "cannot apply migration %d (%s) to %s '%s'", m->version,
                     m->name, reg->schema->what, reg->path);
        goto fail;
    }
    /* PRAGMA takes no bound parameters; the number is ours. */
    snprintf(set_version, sizeof(set_version), "PRAGMA user_version = %d", m->version);
    rc = sqlite3_exec(reg->db, set_version, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        r = reg_fail(reg, rc, "cannot record migration %d in %s '%s'", m->version,
                     reg->schema->what, reg->path);
        goto fail;
    }
    r = registry_commit(reg);
    if (r < 0)
        goto fail;
    return 0;

fail:
    registry_rollback(reg);
    return r;
}

int reg_migrate(struct registry *reg)
{
    const struct reg_schema *schema = reg->schema;
    int version = 0, r, rc;

    for (size_t i = 0; i < schema->n_migrations; i++)
        if (schema->migrations[i].version != (int)i + 1)
            return error_set(EINVAL, "%s migration %zu is numbered %d", schema->what, i + 1,
                             schema->migrations[i].version);

    /* Read the version and the identity in one read transaction: another
     * process may be applying migration 1 right now, and its tables must
     * not be taken for a foreign database's. */
    rc = sqlite3_exec(reg->db, "BEGIN DEFERRED", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return reg_fail(reg, rc, "cannot read the schema of %s '%s'", schema->what, reg->path);
    r = reg_user_version(reg, &version);
    /* Identity first: another kind of kiln database (the accounts database
     * opened as a registry, or the reverse) may well be at a version this
     * kind does not have, and is "not a ...", not "newer". */
    if (r >= 0)
        r = check_identity(reg, version);
    if (r >= 0 && version > reg_schema_latest(schema))
        r = refuse_newer(reg, version);
    rc = sqlite3_exec(reg->db, "COMMIT", NULL, NULL, NULL);
    if (r < 0)
        return r;
    if (rc != SQLITE_OK)
        return reg_fail(reg, rc, "cannot read the schema of %s '%s'", schema->what, reg->path);

    for (size_t i = 0; i < schema->n_migrations; i++) {
        if (schema->migrations[i].version <= version)
            continue;
        r = apply(reg, &schema->migrations[i]);
        if (r < 0)
            return r;
    }
    return 0;
}

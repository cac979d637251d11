/* Shared plumbing of the kiln command line: option parsing for the options
 * every verb takes, opening the region, and output helpers. */
#ifndef KILN_CMD_CLI_H
#define KILN_CMD_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include "service/service.h"

#define EXIT_USAGE 2

struct cli {
    char *data_dir;
    char *region;
    bool quiet;
};

/* Options every verb accepts, to splice into each verb's getopt table. */
#define CLI_COMMON_OPTIONS                                                    \
    { "data-dir", required_argument, NULL, 'D' },                             \
    { "region", required_argument, NULL, 'R' },                               \
    { "quiet", no_argument, NULL, 'q' },                                      \
    { "verbose", no_argument, NULL, 'v' },                                    \
    { "help", no_argument, NULL, 'h' }

#define CLI_COMMON_SHORT "qvh"

/* Handle a common option: 1 if it was one (and handled), 0 if not, or an
 * exit status (>= 0 via *ret_exit) for --help.  `usage` is the verb's
 * help text. */
int cli_common_option(struct cli *cli, int opt, const char *usage, int *ret_exit);

/* A verb's own option, called for each option that is not a common one and
 * that the verb accepts.  Returns -1 to go on, or an exit status. */
typedef int (*cli_option_fn)(int opt, const char *arg, void *ud);

/* Parse a verb's arguments with getopt_long (options may follow arguments):
 * common options are handled here, the verb's own go to fn.  `allowed`
 * names (space-separated) the options of `options` this verb accepts;
 * `npos` is the exact number of arguments.  Returns -1 to go on, with the
 * arguments in *ret_pos, or an exit status (0 after --help). */
int cli_parse(struct cli *cli, int argc, char **argv, const struct option *options,
              const char *usage, const char *allowed, int npos, cli_option_fn fn, void *ud,
              char ***ret_pos);

/* Open the region named by --region (default us-east-1) in --data-dir. */
int cli_open_region(struct cli *cli, struct region **ret);

/* Print "kiln: <message>" for error `err` to standard error. */
void cli_error(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print "kiln: <message>" alone. */
void cli_fail(int err);

/* Write s as a JSON string literal. */
void json_string(FILE *f, const char *s);

/* "2026-11-27T06:51:38.000Z" from unix milliseconds. */
const char *format_time_ms(int64_t ms, char *buf, size_t size);

/* -1 if `id` is a valid id with `prefix` ("vol" or "snap"), or else, after
 * saying so on standard error, the exit status EXIT_USAGE. */
int cli_check_id(const char *prefix, const char *id);

/* Print n rows as a JSON array, one element a line, the i-th by
 * print_at(rows, i). */
void cli_print_json_array(const void *rows, size_t n,
                          void (*print_at)(const void *rows, size_t i));

/* A verb of a command ("list" of `kiln volume`). */
struct cli_verb {
    const char *name;
    int (*fn)(struct cli *cli, int argc, char **argv);
};

/* Run the verb argv[1] of command `command` ("volume") with argv + 1:
 * `usage` (the command's) on standard output for --help (exit 0), on
 * standard error with EXIT_USAGE when the verb is missing or unknown. */
int cli_dispatch(struct cli *cli, int argc, char **argv, const char *command,
                 const struct cli_verb *verbs, size_t n_verbs, const char *usage);

/* Open the region and run fn(region, id) (a delete): the exit status, 0, or
 * 1 after cli_fail(). */
int cli_region_call(struct cli *cli, const char *id,
                    int (*fn)(struct region *r, const char *id));

/* A `kiln ... list [--json]` of registry rows: list() fills an array the
 * caller frees with release(); each row prints as JSON with print_json_at(),
 * or as a table line with print_row_at() under print_header() (called only
 * when there are rows). */
struct cli_table {
    const char *what; /* "volumes", in "cannot list volumes" */
    int (*list)(struct region *r, void **ret_rows, size_t *ret_n);
    void (*release)(void *rows, size_t n);
    void (*print_json_at)(const void *rows, size_t i);
    void (*print_header)(void);
    void (*print_row_at)(const void *rows, size_t i);
};

/* Open the region, list t's rows and print them: the exit status (1 after
 * "kiln: cannot list <what>: ..." on standard error). */
int cli_list(struct cli *cli, bool json, const struct cli_table *t);

int cmd_snapshot(struct cli *cli, int argc, char **argv);
int cmd_image(struct cli *cli, int argc, char **argv);
int cmd_fsck(struct cli *cli, int argc, char **argv);
int cmd_gc(struct cli *cli, int argc, char **argv);
int cmd_du(struct cli *cli, int argc, char **argv);
int cmd_serve(struct cli *cli, int argc, char **argv);
int cmd_account(struct cli *cli, int argc, char **argv);
int cmd_nbd(struct cli *cli, int argc, char **argv);
int cmd_volume(struct cli *cli, int argc, char **argv);
int cmd_vm(struct cli *cli, int argc, char **argv);
int cmd_imds_serve(struct cli *cli, int argc, char **argv);
int cmd_base_image(struct cli *cli, int argc, char **argv);
/* kiln bake TEMPLATE (cmd-bake.c); its verbs cache and distribute
 * (cmd-bake-admin.c), argv[0] being the verb. */
int cmd_bake(struct cli *cli, int argc, char **argv);
int cmd_bake_cache(struct cli *cli, int argc, char **argv);
int cmd_bake_distribute(struct cli *cli, int argc, char **argv);

#endif

/* Scope-bound cleanup helpers built on __attribute__((cleanup)).
 *
 * _cleanup_free_ char *p = ...;   freed when p leaves scope
 * _cleanup_close_ int fd = ...;   closed when fd leaves scope (if >= 0)
 * return TAKE_PTR(p);             hand ownership out, leaving NULL behind
 */
#ifndef KILN_COMMON_CLEANUP_H
#define KILN_COMMON_CLEANUP_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline void cleanup_freep(void *p)
{
    free(*(void **)p);
}

static inline void cleanup_closep(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}

static inline void cleanup_fclosep(FILE **f)
{
    if (*f)
        fclose(*f);
}

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(cleanup_freep)
#define _cleanup_close_ _cleanup_(cleanup_closep)
#define _cleanup_fclose_ _cleanup_(cleanup_fclosep)

/* Declare cleanup_<type>_freep() for a `struct type *` with a _free(). */
#define DEFINE_CLEANUP_FREE(type, freefn)                                     \
    static inline void freefn##p(type **p)                                    \
    {                                                                         \
        freefn(*p);                                                           \
    }

#define TAKE_PTR(p)                                                           \
    ({                                                                        \
        __typeof__(p) take_ptr_tmp_ = (p);                                    \
        (p) = NULL;                                                           \
        take_ptr_tmp_;                                                        \
    })

#define TAKE_FD(fd)                                                           \
    ({                                                                        \
        int take_fd_tmp_ = (fd);                                              \
        (fd) = -1;                                                            \
        take_fd_tmp_;                                                         \
    })

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(a, b) (((a) + (b) - 1) / (b))

#endif

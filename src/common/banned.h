/* Calls that are easy to get wrong, turned into compile errors (after git's
 * banned.h).  Use snprintf, strncpy-free string building and xasprintf. */
#ifndef KILN_COMMON_BANNED_H
#define KILN_COMMON_BANNED_H

#define BANNED(func) sorry_##func##_is_banned_in_kiln

#undef strcpy
#define strcpy(x, y) BANNED(strcpy)
#undef strcat
#define strcat(x, y) BANNED(strcat)
#undef sprintf
#define sprintf(...) BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)
#undef gets
#define gets(x) BANNED(gets)
#undef strtok
#define strtok(x, y) BANNED(strtok)

#endif

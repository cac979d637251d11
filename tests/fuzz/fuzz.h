/* Every fuzz target defines LLVMFuzzerTestOneInput().  Built with
 * -Dfuzz=true (clang) it links libFuzzer; in normal builds it links
 * replay.c, which feeds it each file of the target's corpus directory, so the
 * corpus runs as an ordinary test. */
#ifndef KILN_TESTS_FUZZ_H
#define KILN_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif

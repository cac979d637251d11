/* The documented subset of Packer's legacy JSON templates (docs/baking.md,
 * "Packer subset"), read into the same struct bake_template as a native
 * template: one amazon-ebs builder, shell and file provisioners, the
 * manifest post-processor.  Anything outside the subset is -EINVAL naming
 * it (`builders[0].spot_price: outside kiln's Packer subset`); settings
 * that kiln replaces by its own (AWS credentials, SSH) are accepted and
 * listed in t->warnings.
 */
#ifndef KILN_BAKE_PACKER_H
#define KILN_BAKE_PACKER_H

#include <stddef.h>

struct bake_template;

/* Parse text[0..len) as a Packer legacy JSON template.  Returns 0 and a
 * template to free with bake_template_free(), or -EINVAL with a message
 * naming the place. */
int bake_packer_parse(const char *text, size_t len, struct bake_template **ret);

#endif

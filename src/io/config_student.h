// Internal: the student fields of config.json (attention target, MLA dims, GateSWA gate/sinks).
#ifndef AE_IO_CONFIG_STUDENT_H
#define AE_IO_CONFIG_STUDENT_H

#include "io/config.h"
#include "io/config_json.h"

// Reads the student fields after the teacher fields (layer_types/sliding_window included) are
// parsed; a config without "attention_target" is a teacher: every layer AE_ATTN_GQA.
ae_status ae_config_parse_student(const ae_cfgctx *c, ae_config *cfg);

#endif

// Crash-consistency test hook: AE_TEST_KILL_POINT=NAME:N in the environment makes the N-th
// pass (1-based, counted in this process; ":N" omitted = 1) through ae_kill_point("NAME")
// raise SIGKILL, so tests and scripts/soak-resume.sh can kill a run at an exact moment of a
// checkpoint or file write. Without the variable (production) a pass costs one getenv.
//
// Points: "step" (after each optimizer step and its periodic checkpoint), "ckpt-params" (a
// checkpoint's params.safetensors written in its temporary folder, state.json not yet),
// "dir-filled" (an atomic folder write's temporary folder complete, nothing renamed),
// "dir-old-moved" (the previous folder, if any, moved to NAME.old; the new one not yet in place),
// "dir-renamed" (the new folder in place, NAME.old not yet removed), "file-synced" (an atomic
// file write's temporary file complete and synced, not yet renamed).
#ifndef AE_CORE_KILLPOINT_H
#define AE_CORE_KILLPOINT_H

void ae_kill_point(const char *name);

#endif

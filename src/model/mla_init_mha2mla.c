// MLA initialisation `--init mha2mla`: MHA2MLA's partial-RoPE selection (Ji et al., "Towards
// Economical Inference: Enabling DeepSeek's Multi-Head Latent Attention in Any Transformer-based
// LLMs", 2025: keep rotating the frequency pairs that contribute most to the attention scores,
// the "2-norm" criterion; joint SVD of the kept keys and values) adapted to DeepSeek's fixed
// rope frequencies.
//
// Constraint. The student's rope slot j rotates at theta^(−2j/dr) (DeepSeek format, exported as
// DeepseekV2), so the student cannot keep an arbitrary set of teacher pairs at their own
// frequencies. Teacher pair i rotates at theta^(−2i/hd); the s = hd/dr pairs j·s .. j·s+s−1 form
// slot j's "window", whose first pair has exactly slot j's frequency (what --init teacher keeps).
//
// Method (weight-based, no calibration data). Steps 0, 1, 3, 5, 6 as mla_init.c. Then:
// 2'. Score of teacher pair i: score_i = Σ_h ‖Q_h,i‖ · ‖K_g(h),i‖, the norms of the folded rows
//     of the pair (x and y rows together) weighted by the input norm, ‖[row_x; row_y] ⊙ w_in‖:
//     for isotropic z they are the RMS sizes of the pair's query and key, whose product bounds
//     the pair's contribution to head h's logit (MHA2MLA's 2-norm score with activation norms
//     replaced by their expectation). For each slot j the pair of largest score in window j is
//     chosen (ties: the first). Its query rows become head h's rope pair j (interleaved) and it
//     rotates at slot j's frequency: exact when it is the window's first pair, APPROXIMATE
//     otherwise (its own frequency was theta^(−2i/hd), within the window's range); the number of
//     such slots is reported (ae_mla_init_stats.rope_shifted). Every unchosen pair — the
//     window's first pair too when another was chosen — goes to the nope part (dn = hd − dr dims
//     per head, increasing teacher order; they lose their rotation, as with --init teacher).
// 4'. Shared rope key: the mean over kv heads of the chosen pairs' folded key rows (exact with
//     one kv head). The joint SVD of the nope keys and values (step 5) is unchanged.
// With s == 1 every window holds one pair and this is --init teacher.
#include <math.h>
#include <stdlib.h>

#include "model/mla_internal.h"

// ‖[row i; row i+half] ⊙ w_in‖ of head block f (hd, D).
static double pair_norm(const mla_maps *mp, const double *f, int i) {
    const double *x = f + (size_t)i * mp->D, *y = f + (size_t)(i + mp->half) * mp->D;
    const float *w = mp->t->input_norm;
    return sqrt(mla_wdot(x, x, w, mp->D) + mla_wdot(y, y, w, mp->D));
}

ae_status mla_fill_mha2mla(mla_maps *mp, int *shifted) {
    int slots = mp->dr / 2, grp = mp->Hq / mp->Hkv;
    size_t head = (size_t)mp->hd * mp->D;
    double *score = calloc((size_t)mp->half, sizeof(double)); // (hd/2) per teacher pair
    int *pair = malloc(sizeof(int) * (size_t)slots);            // (dr/2) chosen pair per slot
    if (!score || !pair) {
        free(score);
        free(pair);
        return ae_errorf(AE_ERR_NOMEM, "MLA mha2mla init: out of memory");
    }
    for (int h = 0; h < mp->Hq; h++) {
        const double *q = mp->Qf + h * head, *k = mp->Kf + (h / grp) * head;
        for (int i = 0; i < mp->half; i++) score[i] += pair_norm(mp, q, i) * pair_norm(mp, k, i);
    }
    *shifted = 0;
    for (int j = 0; j < slots; j++) {
        int best = j * mp->s;
        for (int i = best + 1; i < (j + 1) * mp->s; i++)
            if (score[i] > score[best]) best = i;
        pair[j] = best;
        *shifted += best != j * mp->s;
    }
    ae_status st = mla_maps_split(mp, pair);
    free(score);
    free(pair);
    return st;
}

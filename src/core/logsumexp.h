// The library's one log-sum-exp of a host float row, reduced in double: the CPU backend's row
// scores (nll_rows, kl_rows) and the server's log-probabilities both use it.
#ifndef AE_CORE_LOGSUMEXP_H
#define AE_CORE_LOGSUMEXP_H

// log Σ_i exp(z_i) over n >= 1 values, max-shifted, summed in double.   z: (n)
double ae_logsumexp(const float *z, int n);

#endif

// Singular value decomposition (dgesvd) and symmetric eigenvectors (dsyev) for the MLA teacher
// initialisations, through the LAPACK that OpenBLAS exports (double precision). LAPACK is column-major: a row-major (M, N) matrix
// A is the column-major (N, M) matrix Aᵀ. Decomposing Aᵀ = U'·S·V'ᵀ gives A = V'·S·U'ᵀ, and the
// buffers come out already in our layout: LAPACK's VT (k, M) column-major read row-major is
// U_A (M, k); LAPACK's U (N, k or N) column-major read row-major is Vt_A (k or N, N).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "model/mla_internal.h"

// LAPACK (Fortran) prototype; the hidden string-length arguments of the one-character job
// options are omitted, as the reference C callers of LAPACK do.
void dgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, double *a,
             const int *lda, double *s, double *u, const int *ldu, double *vt, const int *ldvt,
             double *work, const int *lwork, int *info);
void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
            double *work, const int *lwork, int *info);

ae_status mla_svd(int M, int N, const double *A, double *U, double *S, double *Vt, int full_vt) {
    if (M <= 0 || N <= 0) return ae_errorf(AE_ERR_ARG, "SVD: empty matrix (%d x %d)", M, N);
    int k = M < N ? M : N;
    int lm = N, ln = M; // LAPACK's view: Aᵀ, (N, M) column-major
    size_t n_el = (size_t)M * (size_t)N;
    double *a = malloc(sizeof(double) * n_el);
    if (!a) return ae_errorf(AE_ERR_NOMEM, "SVD: out of memory (%d x %d)", M, N);
    memcpy(a, A, sizeof(double) * n_el);
    const char *jobu = full_vt ? "A" : "S", *jobvt = "S";
    int lda = lm, ldu = lm, ldvt = k, lwork = -1, info = 0;
    double wq = 0.0;
    dgesvd_(jobu, jobvt, &lm, &ln, a, &lda, S, Vt, &ldu, U, &ldvt, &wq, &lwork, &info);
    if (info != 0) {
        free(a);
        return ae_errorf(AE_ERR_UNSUPPORTED, "SVD: dgesvd workspace query failed (info %d)", info);
    }
    lwork = (int)wq + 1;
    double *work = malloc(sizeof(double) * (size_t)lwork);
    if (!work) {
        free(a);
        return ae_errorf(AE_ERR_NOMEM, "SVD: out of memory for the workspace");
    }
    dgesvd_(jobu, jobvt, &lm, &ln, a, &lda, S, Vt, &ldu, U, &ldvt, work, &lwork, &info);
    free(work);
    free(a);
    if (info != 0)
        return ae_errorf(AE_ERR_UNSUPPORTED, "SVD of a %d x %d matrix did not converge (info %d)",
                         M, N, info);
    return AE_OK;
}

ae_status mla_sym_top_eig(int n, const double *A, double *u, double *lambda) {
    if (n <= 0) return ae_errorf(AE_ERR_ARG, "eigenvectors: empty matrix (%d x %d)", n, n);
    size_t n_el = (size_t)n * (size_t)n;
    double *a = malloc(sizeof(double) * n_el), *w = malloc(sizeof(double) * (size_t)n), wq = 0.0;
    if (!a || !w) {
        free(a);
        free(w);
        return ae_errorf(AE_ERR_NOMEM, "eigenvectors: out of memory (%d x %d)", n, n);
    }
    memcpy(a, A, sizeof(double) * n_el); // symmetric: row- and column-major are the same
    int lwork = -1, info = 0;
    dsyev_("V", "U", &n, a, &n, w, &wq, &lwork, &info);
    double *work = NULL;
    if (info == 0) {
        lwork = (int)wq + 1;
        work = malloc(sizeof(double) * (size_t)lwork);
        if (work) dsyev_("V", "U", &n, a, &n, w, work, &lwork, &info);
    }
    ae_status st = AE_OK;
    if (!work && info == 0) st = ae_errorf(AE_ERR_NOMEM, "eigenvectors: out of memory for the workspace");
    else if (info != 0)
        st = ae_errorf(AE_ERR_UNSUPPORTED, "eigenvectors of a %d x %d matrix: dsyev failed (info %d)",
                       n, n, info);
    if (st == AE_OK) { // eigenvalues ascending: the last column (column-major) is the top one
        const double *v = a + (size_t)(n - 1) * n;
        int big = 0;
        for (int i = 1; i < n; i++)
            if (fabs(v[i]) > fabs(v[big])) big = i;
        double sg = v[big] < 0.0 ? -1.0 : 1.0;
        for (int i = 0; i < n; i++) u[i] = sg * v[i];
        *lambda = w[n - 1];
    }
    free(work);
    free(a);
    free(w);
    return st;
}

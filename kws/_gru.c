/* kws._gru: kws.arith.gru_layer_folded (a GRU layer over one chunk), compiled; gru_step: the engine's
 * whole streaming step (normalisation, layers, head, softmax) in one call; mel_log_dct / mel_pcen_dct:
 * the front end after the FFT (kws/features.py NumpyMFCC: log mel or PCEN, then the DCT), in one call.
 *
 * Why: at batch 1 a numpy call costs about a microsecond whatever it computes, and a GRU step in numpy
 * is eleven calls, so the streaming engine spends most of a 100 ms chunk in call overhead
 * (README, "Streaming cost"). This is the same loop, one call per layer and chunk.
 *
 * Optional: when it is not built (no C compiler at install), kws/engine.py runs the numpy loop, and
 * tests/test_kernel.py holds this kernel to that loop and to torch.nn.GRU at atol 1e-5.
 *
 * The equations are gru_layer_folded's, on gru_fold's weights (bias as the last row of wh, against a
 * constant 1 after the state; the r/z columns halved so that u = 1 + tanh(a/2) = 2 sigmoid(a)):
 *   g  = h1 @ wh                          [3H]
 *   u  = 1 + tanh(g[:2H] + gi[t, :2H])    (= 2 * (r, z))
 *   n  = tanh(gi[t, 2H:] + u_r * g[2H:])  (= tanh(W_in x + b_in + r * (W_hn h + b_hn)))
 *   h' = n + (h - n) * u_z * 0.5          (= (1 - z) * n + z * h)
 * tanh is the rational approximation of Eigen and onnxruntime's MLAS (error below 1e-6 in float32,
 * tested against numpy's tanh), so the element-wise loops vectorise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* one build, AVX2/FMA where the CPU has it, SSE2 elsewhere (GCC function multi-versioning) */
#define KWS_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KWS_CLONES
#endif

static inline float fast_tanh(float x)
{
    const float c = 7.90531110763549805f;   /* |x| beyond this: tanh rounds to +-1 in float32 */
    x = x > c ? c : (x < -c ? -c : x);
    const float x2 = x * x;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * x;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return p / q;
}

KWS_CLONES
static void tanh_array(const float *x, float *y, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        y[i] = fast_tanh(x[i]);
}

/* Products 64 columns at a time in eight 8-float accumulators (GCC/clang vector extensions), so they
   stay in registers while the rows stream past: written as a plain array loop, GCC 12 unrolls the rows
   and spills the accumulators to the stack (3x slower). */
#if defined(__GNUC__)
typedef float v8f __attribute__((vector_size(32)));
static inline v8f load8(const float *p) { v8f v; memcpy(&v, p, sizeof v); return v; }
#define KWS_BLOCK 64
#else
#define KWS_BLOCK 0
#endif

/* y[t, j] = sum_i x[t, i] * m[i, j] for t < T, j < cols; x [T, rows], m [rows, cols], y [T, cols],
   row-major. A 64-column block of m (rows x 256 bytes: one layer's block fits in L1) serves all T rows
   of x before the next block, so each weight is read from memory once per call, not once per row. */
static inline void matmul(const float *x, Py_ssize_t T, Py_ssize_t rows, const float *m, Py_ssize_t cols,
                          float *y)
{
    Py_ssize_t j0 = 0;
#if KWS_BLOCK
    for (; j0 + KWS_BLOCK <= cols; j0 += KWS_BLOCK) {
        for (Py_ssize_t t = 0; t < T; t++) {
            const float *v = x + t * rows;
            v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
            const float *r = m + j0;
            for (Py_ssize_t i = 0; i < rows; i++, r += cols) {
                const float vi = v[i];
                a0 += vi * load8(r);      a1 += vi * load8(r + 8);  a2 += vi * load8(r + 16);
                a3 += vi * load8(r + 24); a4 += vi * load8(r + 32); a5 += vi * load8(r + 40);
                a6 += vi * load8(r + 48); a7 += vi * load8(r + 56);
            }
            float *o = y + t * cols + j0;
            memcpy(o, &a0, 32); memcpy(o + 8, &a1, 32); memcpy(o + 16, &a2, 32); memcpy(o + 24, &a3, 32);
            memcpy(o + 32, &a4, 32); memcpy(o + 40, &a5, 32); memcpy(o + 48, &a6, 32); memcpy(o + 56, &a7, 32);
        }
    }
#endif
    for (Py_ssize_t t = 0; t < T && j0 < cols; t++) {
        float *o = y + t * cols;
        for (Py_ssize_t j = j0; j < cols; j++)
            o[j] = 0.0f;
        for (Py_ssize_t i = 0; i < rows; i++) {
            const float vi = x[t * rows + i];
            for (Py_ssize_t j = j0; j < cols; j++)
                o[j] += vi * m[i * cols + j];
        }
    }
}

KWS_CLONES
static void gru_layer(const float *x1, Py_ssize_t D1, const float *h0, const float *wi, const float *wh,
                      float *out, float *gi, float *g, Py_ssize_t T, Py_ssize_t H)
{
    const Py_ssize_t G = 3 * H;
    matmul(x1, T, D1, wi, G, gi);             /* gi = x1 @ wi: the input products of all steps */
    const float *h = h0;                      /* H + 1 values, the last one 1 */
    for (Py_ssize_t t = 0; t < T; t++) {
        const float *git = gi + t * G;
        float *o = out + t * (H + 1);
        matmul(h, 1, H + 1, wh, G, g);        /* g = h1 @ wh */
        for (Py_ssize_t j = 0; j < 2 * H; j++)
            g[j] = fast_tanh(g[j] + git[j]) + 1.0f;
        for (Py_ssize_t j = 0; j < H; j++) {
            const float n = fast_tanh(g[j] * g[2 * H + j] + git[2 * H + j]);
            o[j] = n + (h[j] - n) * g[H + j] * 0.5f;
        }
        o[H] = 1.0f;
        h = o;
    }
}

/* a C-contiguous buffer of `want` items of struct format `fmt` ("f" float32, "d" float64, "i" int32;
   want < 0: any length); 0 or -1 with an exception */
static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *name, const char *fmt,
                      Py_ssize_t itemsize, const char *type_name, Py_ssize_t want)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (f[0] == '<' || f[0] == '=' || f[0] == '@')
        f++;
    if (strcmp(f, fmt) != 0 || view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s must be %s", name, type_name);
        PyBuffer_Release(view);
        return -1;
    }
    if (want >= 0 && view->len != want * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s has %zd values, expected %zd", name, view->len / itemsize, want);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int get_floats(PyObject *obj, Py_buffer *view, int writable, const char *name, Py_ssize_t want)
{
    return get_buffer(obj, view, writable, name, "f", 4, "float32", want);
}

PyDoc_STRVAR(gru_layer_doc,
"gru_layer(x1, h1, wi, wh, out1)\n\n"
"kws.arith.gru_layer_folded, compiled: x1 [T, D+1] inputs and h1 [H+1] state, each ending in a\n"
"constant 1; wi [D+1, 3H] and wh [H+1, 3H] gru_fold's weights; writes out1 [T, H+1] (its last\n"
"column 1, so out1 is the next layer's x1). All float32, C-contiguous. Releases the GIL.");

static PyObject *gru_layer_py(PyObject *self, PyObject *args)
{
    PyObject *o_x, *o_h, *o_wi, *o_wh, *o_out;
    if (!PyArg_ParseTuple(args, "OOOOO:gru_layer", &o_x, &o_h, &o_wi, &o_wh, &o_out))
        return NULL;
    Py_buffer v[5];                           /* x1, h1, wi, wh, out1 */
    int got = 0;
    PyObject *ret = NULL;
    float *scratch = NULL;
    Py_ssize_t H, G, D1, T;
    if (get_floats(o_h, &v[1], 0, "h1", -1) < 0) goto done;
    got = 1;
    H = v[1].len / 4 - 1, G = 3 * H;
    if (H < 1) { PyErr_SetString(PyExc_ValueError, "h1 needs at least 2 values"); goto done; }
    if (get_floats(o_wh, &v[3], 0, "wh", (H + 1) * G) < 0) goto done;
    got = 2;
    if (get_floats(o_wi, &v[2], 0, "wi", -1) < 0) goto done;
    got = 3;
    D1 = v[2].len / 4 / G;
    if (D1 < 1 || v[2].len != D1 * G * 4) {
        PyErr_Format(PyExc_ValueError, "wi has %zd values, not a multiple of 3H = %zd", v[2].len / 4, G);
        goto done;
    }
    if (get_floats(o_x, &v[0], 0, "x1", -1) < 0) goto done;
    got = 4;
    T = v[0].len / 4 / D1;
    if (v[0].len != T * D1 * 4) {
        PyErr_Format(PyExc_ValueError, "x1 has %zd values, not a multiple of D+1 = %zd", v[0].len / 4, D1);
        goto done;
    }
    if (get_floats(o_out, &v[4], 1, "out1", T * (H + 1)) < 0) goto done;
    got = 5;
    scratch = (float *)malloc((size_t)(T + 1) * G * sizeof(float));
    if (scratch == NULL) { PyErr_NoMemory(); goto done; }
    Py_BEGIN_ALLOW_THREADS
    gru_layer((const float *)v[0].buf, D1, (const float *)v[1].buf, (const float *)v[2].buf,
              (const float *)v[3].buf, (float *)v[4].buf, scratch + G, scratch, T, H);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    ret = Py_None;
done:
    free(scratch);
    {
        const int order[5] = {1, 3, 2, 0, 4};   /* the order they were taken */
        for (int k = 0; k < got; k++)
            PyBuffer_Release(&v[order[k]]);
    }
    return ret;
}

#define KWS_MAX_LAYERS 8

KWS_CLONES
static void gru_step(const float *frames, const float *mean, const float *std, Py_ssize_t T, Py_ssize_t D,
                     const float *const *wi, const float *const *wh, Py_ssize_t L, Py_ssize_t H,
                     const float *head, Py_ssize_t C, const float *state, float *post, float *new_state,
                     float *scratch)
{
    const Py_ssize_t G = 3 * H;
    float *x1 = scratch;                                  /* [T, D+1] */
    float *h1 = x1 + T * (D + 1);                         /* [H+1] */
    float *out[2] = {h1 + H + 1, h1 + H + 1 + T * (H + 1)};   /* [T, H+1] each, layers alternate */
    float *gi = out[1] + T * (H + 1);                     /* [T, 3H] */
    float *g = gi + T * G;                                /* [3H] */
    float *logits = g + G;                                /* [T, C] */
    for (Py_ssize_t t = 0; t < T; t++) {                  /* = arith.normalize_stack */
        for (Py_ssize_t i = 0; i < D; i++)
            x1[t * (D + 1) + i] = (frames[t * D + i] - mean[i]) / std[i];
        x1[t * (D + 1) + D] = 1.0f;
    }
    const float *x = x1;
    Py_ssize_t D1 = D + 1;
    for (Py_ssize_t k = 0; k < L; k++) {
        memcpy(h1, state + k * H, H * sizeof(float));
        h1[H] = 1.0f;
        float *o = out[k & 1];
        gru_layer(x, D1, h1, wi[k], wh[k], o, gi, g, T, H);
        memcpy(new_state + k * H, o + (T - 1) * (H + 1), H * sizeof(float));
        x = o;
        D1 = H + 1;
    }
    matmul(x, T, H + 1, head, C, logits);                 /* the head, its bias the last row */
    for (Py_ssize_t t = 0; t < T; t++) {                  /* = arith.softmax */
        const float *l = logits + t * C;
        float *p = post + t * C, m = l[0], sum = 0.0f;
        for (Py_ssize_t c = 1; c < C; c++)
            m = l[c] > m ? l[c] : m;
        for (Py_ssize_t c = 0; c < C; c++)
            sum += (p[c] = expf(l[c] - m));
        for (Py_ssize_t c = 0; c < C; c++)
            p[c] /= sum;
    }
}

/* The end of the wrappers below: free the scratch, release the buffers taken, None when ok. */
static PyObject *release_all(int ok, void *scratch, Py_buffer *v, int got)
{
    free(scratch);
    for (int k = 0; k < got; k++)
        PyBuffer_Release(&v[k]);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(gru_step_doc,
"gru_step(frames, mean, std, layers, head, state, post, new_state)\n\n"
"kws.engine.Engine.step1 after its frame stacking, compiled: frames [T, D] (T GRU steps of stacked\n"
"feature frames) are normalised by mean and std [D], run through the GRU layers (a sequence of\n"
"gru_fold's (wi, wh) pairs) from state [L, H], and the head [H+1, C] (its bias the last row) and a\n"
"softmax give post [T, C]; new_state [L, H] receives the last state. All float32, C-contiguous.\n"
"One call per chunk instead of one per layer plus the numpy operations around them. Releases the GIL.");

static PyObject *gru_step_py(PyObject *self, PyObject *args)
{
    PyObject *o[8], *layers = NULL;
    int ok = 0;
    if (!PyArg_ParseTuple(args, "OOOOOOOO:gru_step", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7]))
        return NULL;
    Py_buffer v[6 + 2 * KWS_MAX_LAYERS];
    int got = 0;
    float *scratch = NULL;
    const float *wi[KWS_MAX_LAYERS], *wh[KWS_MAX_LAYERS];
    Py_ssize_t L, H, D, T, C, G;
    layers = PySequence_Fast(o[3], "layers must be a sequence of (wi, wh) pairs");
    if (layers == NULL) return NULL;
    L = PySequence_Fast_GET_SIZE(layers);
    if (L < 1 || L > KWS_MAX_LAYERS) {
        PyErr_Format(PyExc_ValueError, "layers: 1 to %d (wi, wh) pairs, got %zd", KWS_MAX_LAYERS, L);
        goto done;
    }
    if (get_floats(o[1], &v[got], 0, "mean", -1) < 0) goto done;
    D = v[got++].len / 4;
    if (get_floats(o[2], &v[got], 0, "std", D) < 0) goto done;
    got++;
    if (get_floats(o[0], &v[got], 0, "frames", -1) < 0) goto done;
    T = D ? v[got].len / 4 / D : 0;
    if (D < 1 || T < 1 || v[got].len != T * D * 4) {
        PyErr_Format(PyExc_ValueError, "frames has %zd values, not a positive multiple of D = %zd", v[got].len / 4, D);
        got++;
        goto done;
    }
    got++;
    if (get_floats(o[5], &v[got], 0, "state", -1) < 0) goto done;
    H = v[got++].len / 4 / L, G = 3 * H;
    if (H < 1 || v[got - 1].len != L * H * 4) {
        PyErr_Format(PyExc_ValueError, "state has %zd values, not %zd layers x H", v[got - 1].len / 4, L);
        goto done;
    }
    if (get_floats(o[7], &v[got++], 1, "new_state", L * H) < 0) { got--; goto done; }
    for (Py_ssize_t k = 0; k < L; k++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(layers, k);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_Format(PyExc_ValueError, "layers[%zd] must be a (wi, wh) tuple", k);
            goto done;
        }
        if (get_floats(PyTuple_GET_ITEM(pair, 0), &v[got], 0, "wi", ((k ? H : D) + 1) * G) < 0) goto done;
        wi[k] = (const float *)v[got++].buf;
        if (get_floats(PyTuple_GET_ITEM(pair, 1), &v[got], 0, "wh", (H + 1) * G) < 0) goto done;
        wh[k] = (const float *)v[got++].buf;
    }
    if (get_floats(o[4], &v[got], 0, "head", -1) < 0) goto done;
    C = v[got].len / 4 / (H + 1);
    if (C < 1 || v[got].len != C * (H + 1) * 4) {
        PyErr_Format(PyExc_ValueError, "head has %zd values, not a multiple of H+1 = %zd", v[got].len / 4, H + 1);
        got++;
        goto done;
    }
    got++;
    if (get_floats(o[6], &v[got++], 1, "post", T * C) < 0) { got--; goto done; }
    scratch = (float *)malloc(((size_t)T * (D + 1) + (H + 1) + 2 * (size_t)T * (H + 1) + (size_t)(T + 1) * G
                               + (size_t)T * C) * sizeof(float));
    if (scratch == NULL) { PyErr_NoMemory(); goto done; }
    {
        const float *fr = (const float *)v[2].buf, *mean = (const float *)v[0].buf, *sd = (const float *)v[1].buf;
        const float *st = (const float *)v[3].buf, *head = (const float *)v[got - 2].buf;
        float *ns = (float *)v[4].buf, *post = (float *)v[got - 1].buf;
        Py_BEGIN_ALLOW_THREADS
        gru_step(fr, mean, sd, T, D, wi, wh, L, H, head, C, st, post, ns, scratch);
        Py_END_ALLOW_THREADS
    }
    ok = 1;
done:
    Py_DECREF(layers);
    return release_all(ok, scratch, v, got);
}

/* One frame of the front ends below: mel[m] = sum_f |spec[f]|^2 fb[m, f] over band m's bins.
   spec: F (re, im) pairs; fb [M, F] the mel filters, band m nonzero only on bins
   bands[m, 0] <= f < bands[m, 1]. */
static inline void mel_frame(const double *spec, Py_ssize_t F, const double *fb, const int *bands, Py_ssize_t M,
                             double *power, double *mel)
{
    for (Py_ssize_t f = 0; f < F; f++)
        power[f] = spec[2 * f] * spec[2 * f] + spec[2 * f + 1] * spec[2 * f + 1];
    for (Py_ssize_t m = 0; m < M; m++) {
        const double *w = fb + m * F;
        double e = 0.0;
        for (int f = bands[2 * m]; f < bands[2 * m + 1]; f++)
            e += power[f] * w[f];
        mel[m] = e;
    }
}

/* out[k] = sum_m comp[m] dct[m, k], rounded to float32 */
static inline void dct_frame(const double *comp, Py_ssize_t M, const double *dct, Py_ssize_t K, double *acc,
                             float *out)
{
    for (Py_ssize_t k = 0; k < K; k++)
        acc[k] = 0.0;
    for (Py_ssize_t m = 0; m < M; m++) {
        const double v = comp[m], *d = dct + m * K;
        for (Py_ssize_t k = 0; k < K; k++)
            acc[k] += v * d[k];
    }
    for (Py_ssize_t k = 0; k < K; k++)
        out[k] = (float)acc[k];
}

/* power spectrum -> mel -> log -> DCT, float64 inside (as the numpy front end), float32 out.
   spec [T, 2F] (re, im interleaved: numpy's complex128 rfft viewed as float64); dct [M, K]. */
KWS_CLONES
static void mel_log_dct(const double *spec, Py_ssize_t T, Py_ssize_t F, const double *fb, const int *bands,
                        Py_ssize_t M, const double *dct, Py_ssize_t K, double floor_, float *out,
                        double *power, double *mel, double *acc)
{
    for (Py_ssize_t t = 0; t < T; t++) {
        mel_frame(spec + t * 2 * F, F, fb, bands, M, power, mel);
        for (Py_ssize_t m = 0; m < M; m++)
            mel[m] = log(mel[m] + floor_);
        dct_frame(mel, M, dct, K, acc, out + t * K);
    }
}

/* The PCEN front end after the FFT (kws.arith.pcen_smoother and pcen): per frame, mel power E, the
   smoother m = m + s (E - m) (m before the first frame: *m_prev, or E[0] when fresh), then
   (E / (eps + m)^alpha + delta)^r - delta^r and the DCT. m_prev receives the last m. */
KWS_CLONES
static void mel_pcen_dct(const double *spec, Py_ssize_t T, Py_ssize_t F, const double *fb, const int *bands,
                         Py_ssize_t M, const double *dct, Py_ssize_t K, const double *p, int fresh,
                         double *m_prev, float *out, double *power, double *mel, double *acc)
{
    const double s = p[0], alpha = p[1], delta = p[2], r = p[3], eps = p[4], dr = pow(delta, r);
    for (Py_ssize_t t = 0; t < T; t++) {
        mel_frame(spec + t * 2 * F, F, fb, bands, M, power, mel);
        for (Py_ssize_t m = 0; m < M; m++) {
            const double e = mel[m];
            if (fresh && t == 0)
                m_prev[m] = e;
            const double sm = m_prev[m] + s * (e - m_prev[m]);
            m_prev[m] = sm;
            const double g = e * exp(-alpha * log(eps + sm)) + delta;   /* = e / (eps + m)^alpha */
            mel[m] = (r == 0.5 ? sqrt(g) : pow(g, r)) - dr;
        }
        dct_frame(mel, M, dct, K, acc, out + t * K);
    }
}

PyDoc_STRVAR(mel_log_dct_doc,
"mel_log_dct(spec, fb, bands, dct, floor, out)\n\n"
"The log-mel front end after the FFT (kws.arith.mfcc_from_frames from the spectrum on), compiled:\n"
"spec [T, 2F] float64 (an rfft's complex128 output viewed as float64), fb [M, F] float64 mel filters\n"
"with bands [M, 2] int32 the [first, last + 1) bin of each, dct [M, K] float64, floor the log's floor;\n"
"writes out [T, K] float32. Float64 inside, like the numpy front end. Releases the GIL.");

/* mel_log_dct (pcen == NULL) and mel_pcen_dct: the arrays they share, checked the same way */
static PyObject *mel_tail(PyObject *o_spec, PyObject *o_fb, PyObject *o_bands, PyObject *o_dct, double floor_,
                          PyObject *o_out, PyObject *o_params, PyObject *o_state, int fresh)
{
    Py_buffer v[7];                           /* bands, fb, dct, spec, out (, params, state) */
    int got = 0, ok = 0;
    double *scratch = NULL;
    Py_ssize_t M, F, K, T;
    if (get_buffer(o_bands, &v[got], 0, "bands", "i", 4, "int32", -1) < 0) goto done;
    M = v[got++].len / 8;
    if (M < 1 || v[0].len != M * 8) { PyErr_SetString(PyExc_ValueError, "bands must be [M, 2]"); goto done; }
    if (get_buffer(o_fb, &v[got], 0, "fb", "d", 8, "float64", -1) < 0) goto done;
    F = v[got++].len / 8 / M;
    if (F < 1 || v[1].len != M * F * 8) { PyErr_SetString(PyExc_ValueError, "fb must be [M, F]"); goto done; }
    for (Py_ssize_t m = 0; m < M; m++) {
        const int *b = (const int *)v[0].buf + 2 * m;
        if (b[0] < 0 || b[1] < b[0] || b[1] > F) {
            PyErr_Format(PyExc_ValueError, "bands[%zd] = (%d, %d) is not within 0..%zd", m, b[0], b[1], F);
            goto done;
        }
    }
    if (get_buffer(o_dct, &v[got], 0, "dct", "d", 8, "float64", -1) < 0) goto done;
    K = v[got++].len / 8 / M;
    if (K < 1 || v[2].len != M * K * 8) { PyErr_SetString(PyExc_ValueError, "dct must be [M, K]"); goto done; }
    if (get_buffer(o_spec, &v[got], 0, "spec", "d", 8, "float64", -1) < 0) goto done;
    T = v[got++].len / 8 / (2 * F);
    if (v[3].len != T * 2 * F * 8) { PyErr_SetString(PyExc_ValueError, "spec must be [T, 2F]"); goto done; }
    if (get_floats(o_out, &v[got], 1, "out", T * K) < 0) goto done;
    got++;
    if (o_params != NULL) {
        if (get_buffer(o_params, &v[got], 0, "params", "d", 8, "float64", 5) < 0) goto done;
        got++;
        if (get_buffer(o_state, &v[got], 1, "state", "d", 8, "float64", M) < 0) goto done;
        got++;
    }
    scratch = (double *)malloc((size_t)(F + M + K) * sizeof(double));
    if (scratch == NULL) { PyErr_NoMemory(); goto done; }
    {
        const double *spec = (const double *)v[3].buf, *fb = (const double *)v[1].buf, *dct = (const double *)v[2].buf;
        const int *bands = (const int *)v[0].buf;
        float *out = (float *)v[4].buf;
        Py_BEGIN_ALLOW_THREADS
        if (o_params == NULL)
            mel_log_dct(spec, T, F, fb, bands, M, dct, K, floor_, out, scratch, scratch + F, scratch + F + M);
        else
            mel_pcen_dct(spec, T, F, fb, bands, M, dct, K, (const double *)v[5].buf, fresh, (double *)v[6].buf,
                         out, scratch, scratch + F, scratch + F + M);
        Py_END_ALLOW_THREADS
    }
    ok = 1;
done:
    return release_all(ok, scratch, v, got);
}

static PyObject *mel_log_dct_py(PyObject *self, PyObject *args)
{
    PyObject *o_spec, *o_fb, *o_bands, *o_dct, *o_out;
    double floor_;
    if (!PyArg_ParseTuple(args, "OOOOdO:mel_log_dct", &o_spec, &o_fb, &o_bands, &o_dct, &floor_, &o_out))
        return NULL;
    return mel_tail(o_spec, o_fb, o_bands, o_dct, floor_, o_out, NULL, NULL, 0);
}

PyDoc_STRVAR(mel_pcen_dct_doc,
"mel_pcen_dct(spec, fb, bands, dct, params, state, fresh, out)\n\n"
"The PCEN front end after the FFT (kws.arith.pcen_smoother and pcen, then the DCT), compiled: arrays as\n"
"mel_log_dct's; params float64 [s, alpha, delta, r, eps]; state float64 [M], the smoother before the\n"
"first frame (ignored when fresh is true: a stream's start, the smoother starts at the first frame),\n"
"overwritten with its value after the last. The smoother runs frame by frame in float64.");

static PyObject *mel_pcen_dct_py(PyObject *self, PyObject *args)
{
    PyObject *o_spec, *o_fb, *o_bands, *o_dct, *o_params, *o_state, *o_out;
    int fresh;
    if (!PyArg_ParseTuple(args, "OOOOOOpO:mel_pcen_dct", &o_spec, &o_fb, &o_bands, &o_dct, &o_params, &o_state,
                          &fresh, &o_out))
        return NULL;
    return mel_tail(o_spec, o_fb, o_bands, o_dct, 0.0, o_out, o_params, o_state, fresh);
}

PyDoc_STRVAR(tanh_doc, "tanh(x, out)\n\nThe kernel's tanh on float32 arrays (for its accuracy test).");

static PyObject *tanh_py(PyObject *self, PyObject *args)
{
    PyObject *o_x, *o_y;
    if (!PyArg_ParseTuple(args, "OO:tanh", &o_x, &o_y))
        return NULL;
    Py_buffer x, y;
    if (get_floats(o_x, &x, 0, "x", -1) < 0)
        return NULL;
    if (get_floats(o_y, &y, 1, "out", x.len / 4) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    tanh_array((const float *)x.buf, (float *)y.buf, x.len / 4);
    PyBuffer_Release(&x); PyBuffer_Release(&y);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"gru_layer", gru_layer_py, METH_VARARGS, gru_layer_doc},
    {"gru_step", gru_step_py, METH_VARARGS, gru_step_doc},
    {"mel_log_dct", mel_log_dct_py, METH_VARARGS, mel_log_dct_doc},
    {"mel_pcen_dct", mel_pcen_dct_py, METH_VARARGS, mel_pcen_dct_doc},
    {"tanh", tanh_py, METH_VARARGS, tanh_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kws._gru",
    "kws.arith.gru_layer_folded, compiled (optional; see kws/engine.py).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__gru(void)
{
    return PyModule_Create(&module);
}

// Window kernels for CuPy: columns by channel (im2col's transpose), its adjoint, max-pool forward and backward.
//
// Every kernel is gather-only: each thread computes one output element and
// writes it once, so there are no atomics and no races. The includer defines
// T (float or double), KERNEL (extern "C" __global__ on the GPU) and
// LOOP(i, n) (a grid-stride loop on the GPU); tests/test_kernels.py compiles
// this same text for the CPU with a plain for loop and checks it against the
// reference in minicnn.functional.
//
// Layouts (row-major):
//   x, image  (N, C, H, W)
//   col       (C*KH*KW, N*OH*OW), one column per window: the transpose of functional.conv.im2col
//   pooled    (N, C, OH, OW), first_max the same shape (row-major window offset)

KERNEL void columns_by_channel(const T* x, T* col, long long total, int N, int C, int H, int W, int KH, int KW,
                   int SH, int SW, int PH, int PW, int OH, int OW) {
    LOOP(i, total) {
        long long columns = (long long)N * OH * OW;
        long long row = i / columns, column = i % columns;
        int kw = row % KW, kh = (row / KW) % KH, c = row / ((long long)KW * KH);
        int ow = column % OW, oh = (column / OW) % OH;
        long long n = column / ((long long)OW * OH);
        int h = oh * SH - PH + kh, w = ow * SW - PW + kw;
        col[i] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : (T)0;
    }
}

// image[n, c, h, w] = sum of col over every (kernel offset, window) that covers pixel (h, w).
KERNEL void add_columns_by_channel(const T* col, T* image, long long total, int N, int C, int H, int W, int KH, int KW,
                   int SH, int SW, int PH, int PW, int OH, int OW) {
    LOOP(i, total) {
        long long columns = (long long)N * OH * OW;
        int w = i % W, h = (i / W) % H, c = (i / ((long long)W * H)) % C;
        long long n = i / ((long long)W * H * C);
        T sum = 0;
        for (int kh = 0; kh < KH; ++kh) {
            int top = h + PH - kh;  // the window's top row, in padded coordinates
            if (top < 0 || top % SH != 0 || top / SH >= OH) continue;
            for (int kw = 0; kw < KW; ++kw) {
                int left = w + PW - kw;
                if (left < 0 || left % SW != 0 || left / SW >= OW) continue;
                long long row = ((long long)c * KH + kh) * KW + kw;
                sum += col[row * columns + (n * OH + top / SH) * OW + left / SW];
            }
        }
        image[i] = sum;
    }
}

// Maximum over each window, padding counting as -inf. first_max is the row-major
// offset of the first maximum (the tie rule), or of the first NaN, which makes the
// maximum NaN: the same offset numpy.argmax picks.
KERNEL void max_pool_forward(const T* x, T* pooled, int* first_max, long long total, int N, int C, int H, int W,
                             int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW, T minus_infinity) {
    LOOP(i, total) {
        int ow = i % OW, oh = (i / OW) % OH;
        long long plane = i / ((long long)OW * OH);  // n * C + c
        T best = minus_infinity;
        int best_offset = 0;
        for (int kh = 0; kh < KH; ++kh) {
            for (int kw = 0; kw < KW; ++kw) {
                int h = oh * SH - PH + kh, w = ow * SW - PW + kw;
                T value = (h >= 0 && h < H && w >= 0 && w < W) ? x[(plane * H + h) * W + w] : minus_infinity;
                int offset = kh * KW + kw;
                // Strict `>`: a later equal value never wins. A NaN wins and stays (best != best after it).
                if (offset == 0 || (best == best && (value != value || value > best))) {
                    best = value;
                    best_offset = offset;
                }
            }
        }
        pooled[i] = best;
        first_max[i] = best_offset;
    }
}

// grad_x[n, c, h, w] = sum of grad over the windows whose first maximum is pixel (h, w).
KERNEL void max_pool_backward(const T* grad, const int* first_max, T* grad_x, long long total, int N, int C,
                              int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW) {
    LOOP(i, total) {
        int w = i % W, h = (i / W) % H;
        long long plane = i / ((long long)W * H);
        T sum = 0;
        for (int kh = 0; kh < KH; ++kh) {
            int top = h + PH - kh;
            if (top < 0 || top % SH != 0 || top / SH >= OH) continue;
            for (int kw = 0; kw < KW; ++kw) {
                int left = w + PW - kw;
                if (left < 0 || left % SW != 0 || left / SW >= OW) continue;
                long long window = (plane * OH + top / SH) * OW + left / SW;
                if (first_max[window] == kh * KW + kw) sum += grad[window];
            }
        }
        grad_x[i] = sum;
    }
}

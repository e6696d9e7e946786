// parallel.h — OpenMP loops that cost nothing when they would run on one thread.
//
// libgomp sets up a team for every `#pragma omp parallel`, even with num_threads(1) or a false
// `if` clause: ~0.5 µs measured, a tenth of a batch-1 GEMV and paid again by every small op of a
// decode step. These run the body on the calling thread when nt <= 1.
#pragma once

#include <omp.h>

#include <cstdint>

namespace quellm {

// f(tid, nth) on each of nt threads.
template <class F>
void parallel_region(int nt, F&& f) {
    if (nt <= 1) {
        f(0, 1);
        return;
    }
#pragma omp parallel num_threads(nt)
    f(omp_get_thread_num(), omp_get_num_threads());
}

// f(i) for i in [0, n), split statically (contiguous ranges) over nt threads.
template <class F>
void parallel_for(int64_t n, int nt, F&& f) {
    if (nt <= 1 || n <= 1) {
        for (int64_t i = 0; i < n; ++i) f(i);
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; ++i) f(i);
}

}  // namespace quellm

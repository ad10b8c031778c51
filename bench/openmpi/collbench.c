// Open MPI counterpart of `bin/worker collectives`: times MPI_Allgather, MPI_Reduce_scatter_block
// and MPI_Allreduce on float32 at one total size, reporting size, time, algbw and busbw as
// nccl-tests (and our sweep) define them. Built and run by bench/cpu-vs-openmpi.sh.
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int r, n; MPI_Comm_rank(MPI_COMM_WORLD, &r); MPI_Comm_size(MPI_COMM_WORLD, &n);
  long bytes = argc > 1 ? atol(argv[1]) : (64L << 20);
  int iters = argc > 2 ? atoi(argv[2]) : 10;
  long total = bytes / 4, per = total / n;
  float *full = malloc(per * n * 4), *part = malloc(per * 4), *full2 = malloc(per*n*4);
  for (long i = 0; i < per * n; i++) full[i] = 1;
  for (long i = 0; i < per; i++) part[i] = r;
  double f = (double)(n - 1) / n;
  for (int op = 0; op < 3; op++) {
    for (int w = 0; w < 2; w++) {
      if (op == 0) MPI_Allgather(part, per, MPI_FLOAT, full, per, MPI_FLOAT, MPI_COMM_WORLD);
      else if (op==1) MPI_Reduce_scatter_block(full, part, per, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      else MPI_Allreduce(full, full2, per*n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double t = MPI_Wtime();
    for (int i = 0; i < iters; i++) {
      if (op == 0) MPI_Allgather(part, per, MPI_FLOAT, full, per, MPI_FLOAT, MPI_COMM_WORLD);
      else if (op==1) MPI_Reduce_scatter_block(full, part, per, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      else MPI_Allreduce(full, full2, per*n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
    t = (MPI_Wtime() - t) / iters;
    double tmax; MPI_Reduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    const char *name = op == 0 ? "all_gather" : op==1 ? "reduce_scatter" : "all_reduce";
    double bf = op==2 ? 2*f : f;
    if (r == 0) printf("%-15s %11ld B %10.1f us algbw %7.3f GB/s busbw %7.3f GB/s\n", name, per*n*4, tmax*1e6, per*n*4/tmax/1e9, per*n*4/tmax/1e9*bf);
  }
  MPI_Finalize();
}

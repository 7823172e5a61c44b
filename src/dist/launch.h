// `--gpus N`: one command starts a data-parallel group of N ranks on this host, no MPI needed
// (dist/comm.h). The process given --gpus becomes the launcher: it trains nothing itself.
#ifndef AE_DIST_LAUNCH_H
#define AE_DIST_LAUNCH_H

// Index of "--gpus" in argv (1 ≤ i < argc), or 0 when absent.
int ae_dist_gpus_arg(int argc, char **argv);

// Runs argv as N ranks (N = the value after argv[gi], "--gpus"): checks N (digits only, 1..64;
// "--gpus" once) and that this host has N CUDA devices (else one message naming both numbers;
// a build without CUDA: "--gpus needs a build with the CUDA backend"), refuses to run inside an
// mpirun job of several ranks (OMPI_COMM_WORLD_SIZE or PMI_SIZE > 1), makes the NCCL id
// (ae_dist_nccl_id_hex; its message when it fails) — each refusal one message and exit status 2
// — then starts N copies of /proc/self/exe with argv minus "--gpus N" and with AE_DIST_RANK,
// AE_DIST_SIZE, AE_DIST_LOCAL_RANK, AE_DIST_LOCAL_SIZE, AE_DIST_NCCL_ID set (the rest of the
// environment unchanged: AE_DIST_TIMEOUT, NCCL_NVLS_ENABLE=0 ... kept if set; an outer
// launcher's OMPI_COMM_WORLD_*, PMI_RANK, PMI_SIZE, MPI_LOCAL* removed), forwards SIGINT and
// SIGTERM to them (saying so once: "attnedit: got SIGINT; passing it to the N running ranks")
// and waits. Ranks other than 0 have their stderr lines prefixed "[rank r] " (rank 0's output
// is the run's output; stdout is not prefixed). When a rank exits non-zero or dies of a signal
// while the launcher is not already stopping the group, the launcher prints
//   attnedit: rank r exited with status s | was killed by signal k (NAME); stopping the other
//   ranks (the last checkpoint, if any, stays valid)
// (the part from "stopping" only when other ranks still run), sends the others SIGTERM, and
// SIGKILL to those still alive 10 s later (the same 10 s after a forwarded signal). The ranks
// get PR_SET_PDEATHSIG SIGTERM: if the launcher dies, even of SIGKILL, they are stopped (call
// this from the thread that lives as long as the launcher: the main thread). Returns the exit
// status for the launcher: 0 when every rank exited 0, else the first failing rank's status
// (128 + signal for a signal), 1 when a rank could not be started. need_gpus = 0 skips the GPU
// count check and the NCCL id (tests of the launcher on cpu; AE_DIST_NCCL_ID is then unset).
// Linux only (/proc/self/exe, signalfd, prctl).
int ae_dist_launch(int argc, char **argv, int gi, int need_gpus);

#endif

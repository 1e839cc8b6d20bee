// A training loop of your own under mpirun, with nuri's parallel engine: a llama-style model split
// over a tensor-parallel group (its heads, MLP and vocabulary), replicated over data-parallel
// groups whose gradients are reduced in buckets during backward (ZeRO-1), AdamW with a cosine
// schedule, and a checkpoint at the end that any layout can load (perplexity.cpp reads it).
//
//   mpirun -np 4 ./parallel_loop --tp 2 --steps 30 --text corpus.txt --out run
//
// Every rank runs this program; rank 0 prints. Exits non-zero if the loss did not fall.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "nuri/nuri.hpp"

int main(int argc, char** argv) {
  nuri::MpiEnvironment mpi(&argc, &argv);  // MPI_Init; MPI_Finalize at scope exit
  try {
    int tp = 1, steps = 30;
    std::string text_file, out = "run";
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string a = argv[i];
      if (a == "--tp") tp = std::atoi(argv[i + 1]);
      else if (a == "--steps") steps = std::atoi(argv[i + 1]);
      else if (a == "--text") text_file = argv[i + 1];
      else if (a == "--out") out = argv[i + 1];
      else NURI_THROW(config, "parallel_loop", "unknown argument " << a << " (--tp, --steps, --text, --out)");
    }
    NURI_CHECK(!text_file.empty(), config, "parallel_loop", "--text FILE is required");

    // The layout: tp x dp = the ranks of mpirun, TP innermost (checked: a clear error otherwise).
    nuri::ProcessGrid grid(mpi.world(), tp);
    grid.print();
    const bool lead = grid.world_rank() == 0;
    auto backend = nuri::make_backend("cpu", grid.threads_per_rank());

    nuri::ModelConfig cfg = nuri::model_preset("llama-tiny");
    cfg.n_layer = 2;
    cfg.d_model = 64;
    cfg.n_head = 4;
    cfg.n_kv_head = 2;
    cfg.d_ff = 128;
    cfg.vocab_size = 257;  // byte-level tokens
    cfg.max_seq_len = 64;
    // This rank's slices of the model; the same initial model as one process would draw.
    nuri::Model model(cfg, *backend, {nuri::make_tensor_parallel_ops(grid.tp_ptr()), /*sequence_parallel=*/false});
    model.init_weights(/*seed=*/11);

    nuri::OptimConfig ocfg;
    ocfg.lr = 3e-3;
    ocfg.min_lr = 3e-4;
    ocfg.warmup_steps = 3;
    nuri::DataParallelOptions dpo;
    dpo.zero1 = true;
    dpo.tp = grid.tp_ptr();
    nuri::DataParallel engine(model, *backend, ocfg, grid.dp_ptr(), dpo);
    engine.broadcast_parameters();

    // Data: each DP rank serves its rows of every global batch; TP ranks share theirs.
    auto tokenizer = nuri::make_tokenizer("bytes");
    const nuri::TokenDataset data = nuri::load_text_dataset({text_file}, *tokenizer, /*val_fraction=*/0.0);
    const int B = 4, T = 48;
    nuri::BatchLoader loader(data.train, B, T, /*seed=*/1, grid.dp_rank(), grid.dp_size());
    std::vector<int32_t> x(size_t(B) * T), y(x.size());

    double first = 0, last = 0;
    for (int step = 0; step < steps; ++step) {
      engine.zero_grads();
      loader.next(x.data(), y.data());
      const float local = engine.forward_backward(x.data(), y.data(), B, T, 1.0f, /*last_micro_batch=*/true);
      const nuri::DataParallel::Reduced r = engine.reduce(local);  // the mean loss, the global norm
      engine.step(nuri::learning_rate(ocfg, step, steps), r.grad_norm);
      if (step == 0) first = r.loss;
      last = r.loss;
      if (lead && (step % 10 == 0 || step + 1 == steps))
        std::printf("step %3d  loss %.4f  grad norm %.3f\n", step + 1, r.loss, r.grad_norm);
    }

    // A checkpoint of the whole job: every rank writes its share; any layout can load it.
    nuri::CheckpointLayout where;
    where.world = &grid.world();
    where.tp_rank = grid.tp_rank();
    where.tp_size = grid.tp_size();
    where.dp_rank = grid.dp_rank();
    where.dp_size = grid.dp_size();
    where.zero1 = engine.zero1();
    nuri::TrainerState state;
    state.step = steps;
    state.tokens = int64_t(steps) * B * T * grid.dp_size();
    state.tokenizer_hash = tokenizer->hash();
    const std::string dir = nuri::save_checkpoint(out + "/checkpoints", model, engine.optimizer(), state, where);
    if (lead) std::printf("loss %.4f -> %.4f; checkpoint %s (tp %d x dp %d)\n", first, last, dir.c_str(),
                          grid.tp_size(), grid.dp_size());
    return last < first - 0.5 ? 0 : 1;
  } catch (const std::exception& e) {
    nuri::abort_job(e);  // every rank ends, none hangs in a collective
  }
}

#pragma once
// \file
// nuri: train decoder-only language models on CPUs (and, later, GPUs), launched with mpirun.
//
// A tour of the public API (each header documents its types: shapes, ownership, errors):
//
//   #include "nuri/nuri.hpp"
//
//   // 1. A backend owns memory and runs the ops (backend.hpp). "cpu" is the reference.
//   std::unique_ptr<nuri::Backend> be = nuri::make_backend("cpu");
//
//   // 2. A model from a preset (model.hpp): gpt2-* or llama-*, resized at will.
//   nuri::ModelConfig cfg = nuri::model_preset("llama-tiny");
//   cfg.vocab_size = 257;                         // byte-level tokens (data.hpp)
//   nuri::Model model(cfg, *be);                  // parameters in one flat fp32 buffer
//   model.init_weights(/*seed=*/1);
//
//   // 3. Data: a tokenizer, text files, and a resumable loader (data.hpp).
//   auto tok = nuri::make_tokenizer("bytes");
//   nuri::TokenDataset ds = nuri::load_text_dataset({"corpus.txt"}, *tok, /*val_fraction=*/0.05);
//   nuri::BatchLoader loader(ds.train, /*B=*/8, /*T=*/128, /*seed=*/1);
//   // Or byte-level BPE (tokenizer.hpp) and memory-mapped token shards (shards.hpp):
//   auto bpe = nuri::make_tokenizer("data/tokenizer/nuri-ko-8k.json");   // vocab 8192
//
//   // 4. One training step: forward + backward accumulate gradients, AdamW updates (optim.hpp).
//   nuri::OptimConfig ocfg;                       // lr, schedule, weight decay, clipping
//   nuri::AdamW opt(ocfg, model, *be);
//   std::vector<int32_t> x(8 * 128), y(8 * 128);
//   loader.next(x.data(), y.data());
//   model.zero_grads();
//   float loss = model.forward_backward(x.data(), y.data(), 8, 128);
//   opt.step(nuri::learning_rate(ocfg, /*step=*/0, /*total=*/1000), opt.grad_norm());
//
//   // 5. Save the weights and sample (train.hpp); or run a whole configured training:
//   nuri::save_model("model.bin", model);
//   nuri::train(nuri::load_run_config("run.toml", {"train.steps=100"}));   // config.hpp
//
//   // 6. Data and tensor parallel under mpirun (comm.hpp, parallel.hpp, tensor_parallel.hpp).
//   nuri::MpiEnvironment mpi(&argc, &argv);
//   nuri::ProcessGrid grid(mpi.world(), /*tp=*/2);              // tp x dp = ranks
//   nuri::Model tp_model(cfg, *be, {nuri::make_tensor_parallel_ops(grid.tp_ptr())});  // its slices
//   tp_model.init_weights(1);                                   // the same model as one process
//   nuri::DataParallel dp(tp_model, *be, ocfg, grid.dp_ptr(), {.tp = grid.tp_ptr()});  // ZeRO-1 too
//   nuri::train(nuri::load_run_config("run.toml", {}), mpi.world());   // or a whole run, every rank
//
//   // 7. Checkpoints (checkpoint.hpp) load at any layout; Hugging Face safetensors (hf.hpp).
//   nuri::CheckpointLayout where{&grid.world(), grid.tp_rank(), 2, grid.dp_rank(), grid.dp_size()};
//   nuri::save_checkpoint("run/checkpoints", tp_model, dp.optimizer(), {.step = 1}, where);
//   nuri::load_checkpoint(nuri::read_checkpoint(nuri::resolve_checkpoint("run")), tp_model, &dp.optimizer());
//
// Errors are thrown as nuri::Error (error.hpp) with a kind, the op, the rank and file:line.
#include "nuri/backend.hpp"
#include "nuri/checkpoint.hpp"
#include "nuri/comm.hpp"
#include "nuri/config.hpp"
#include "nuri/data.hpp"
#include "nuri/error.hpp"
#include "nuri/hf.hpp"
#include "nuri/log.hpp"
#include "nuri/model.hpp"
#include "nuri/optim.hpp"
#include "nuri/parallel.hpp"
#include "nuri/rng.hpp"
#include "nuri/shards.hpp"
#include "nuri/tensor_parallel.hpp"
#include "nuri/text_source.hpp"
#include "nuri/timer.hpp"
#include "nuri/tokenizer.hpp"
#include "nuri/train.hpp"

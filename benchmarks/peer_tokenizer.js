// The tokenizer benchmark's peer: tiktoken (OpenAI's Rust BPE compiled to WebAssembly, npm
// package "tiktoken") encoding the same documents on N worker threads, as nuri does on N threads.
//
//   node benchmarks/peer_tokenizer.js --modules DIR --encoding gpt2|o200k_base --threads N \
//        --reps R FILE...
// DIR is the node_modules folder that holds tiktoken (benchmarks/tokenizer.sh installs it).
// Documents are split at blank lines, as nuri's text reader does; each worker encodes a
// contiguous share of them (balanced by bytes). Prints one line per repetition and then
//   PEER encoding=... threads=N mb_per_s=<median> tokens=<count>
'use strict';
const fs = require('fs');
const path = require('path');
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');

function splitDocuments(text) {
  // Maximal runs of non-blank lines, line endings kept (matches src/data/text_source.cpp).
  const docs = [];
  let current = '';
  for (const line of text.split(/(?<=\n)/)) {
    if (/^[ \t\r\n]*$/.test(line)) {
      if (current) docs.push(current);
      current = '';
    } else {
      current += line;
    }
  }
  if (current) docs.push(current);
  return docs;
}

if (!isMainThread) {
  const { get_encoding } = require(path.join(workerData.modules, 'tiktoken'));
  const enc = get_encoding(workerData.encoding);
  parentPort.on('message', (msg) => {
    if (msg === 'stop') {
      enc.free();
      process.exit(0);
    }
    const t0 = process.hrtime.bigint();
    let tokens = 0;
    for (const doc of workerData.docs) tokens += enc.encode_ordinary(doc).length;
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    parentPort.postMessage({ tokens, seconds });
  });
  parentPort.postMessage('ready');
  return;
}

const args = process.argv.slice(2);
const opt = { modules: 'node_modules', encoding: 'gpt2', threads: 2, reps: 5, files: [] };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--modules') opt.modules = path.resolve(args[++i]);
  else if (a === '--encoding') opt.encoding = args[++i];
  else if (a === '--threads') opt.threads = parseInt(args[++i], 10);
  else if (a === '--reps') opt.reps = parseInt(args[++i], 10);
  else opt.files.push(a);
}
if (opt.files.length === 0) {
  console.error('peer_tokenizer.js: give at least one text file');
  process.exit(2);
}

const docs = [];
let bytes = 0;
for (const f of opt.files) {
  const text = fs.readFileSync(f, 'utf8');
  bytes += Buffer.byteLength(text, 'utf8');
  docs.push(...splitDocuments(text));
}
// Contiguous shares of about equal bytes, one per worker.
const shares = Array.from({ length: opt.threads }, () => []);
const target = bytes / opt.threads;
let acc = 0;
for (const d of docs) {
  const k = Math.min(opt.threads - 1, Math.floor(acc / target));
  shares[k].push(d);
  acc += Buffer.byteLength(d, 'utf8');
}

async function main() {
  const workers = await Promise.all(shares.map((share) => new Promise((resolve, reject) => {
    const w = new Worker(__filename, { workerData: { modules: opt.modules, encoding: opt.encoding, docs: share } });
    w.once('message', () => resolve(w));
    w.once('error', reject);
  })));
  const rate = [];
  let tokens = 0;
  for (let r = 0; r < opt.reps + 1; r++) {  // the first round warms up and is not counted
    const t0 = process.hrtime.bigint();
    const results = await Promise.all(workers.map((w) => new Promise((resolve) => {
      w.once('message', resolve);
      w.postMessage('go');
    })));
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    tokens = results.reduce((s, x) => s + x.tokens, 0);
    if (r > 0) {
      rate.push(bytes / 1e6 / seconds);
      console.log(`  peer rep ${r}: ${(bytes / 1e6 / seconds).toFixed(2)} MB/s`);
    }
  }
  for (const w of workers) w.postMessage('stop');
  rate.sort((a, b) => a - b);
  const median = rate[Math.floor(rate.length / 2)];
  console.log(`PEER encoding=${opt.encoding} threads=${opt.threads} mb_per_s=${median.toFixed(3)} tokens=${tokens}`);
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});

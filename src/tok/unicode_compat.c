// Unicode-version compatibility with HF tokenizers 0.23 (the version that made the goldens).
// Measured on every code point against HF itself (tokenizers 0.23.2):
//  - its regex engine (Oniguruma, Unicode 16) puts more code points in \p{L} and \p{N} than
//    PCRE2 10.42 (Unicode 14): the Unicode 15/16 letters and digits below are added to those
//    classes when the pattern is compiled (none the other way round);
//  - its NFC (unicode-normalization-alignments, Unicode 9 tables) does not know the combining
//    classes / decompositions of the code points in NFC_OPAQUE, which utf8proc (Unicode 15)
//    does: HF treats them as plain starters, so we leave them untouched and normalize only the
//    text between them.
// White space (\s) needs no table: tok/pretok.c spells out the White_Space set HF uses.
#include <stddef.h>
#include <stdint.h>

#include "tok/tok_internal.h"

static const char EXTRA_L[] =
    "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}"
    "\\x{10D4A}-\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}"
    "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}"
    "\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}"
    "\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}"
    "\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}"
    "\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}"
    "\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";

static const char EXTRA_N[] =
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}"
    "\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}"
    "\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}";

static const uint32_t NFC_OPAQUE[][2] = {
    {0x7FD, 0x7FD},     {0x898, 0x89F},     {0x8CA, 0x8D3},     {0x9FE, 0x9FE},
    {0xC3C, 0xC3C},     {0xD3B, 0xD3C},     {0xEBA, 0xEBA},     {0x1715, 0x1715},
    {0x1ABF, 0x1ACE},   {0x1DF6, 0x1DFA},   {0xA82C, 0xA82C},   {0x10D24, 0x10D27},
    {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85},
    {0x11070, 0x11070}, {0x1133B, 0x1133B}, {0x1145E, 0x1145E}, {0x11839, 0x1183A},
    {0x11930, 0x11930}, {0x11938, 0x11938}, {0x1193D, 0x1193E}, {0x11943, 0x11943},
    {0x119E0, 0x119E0}, {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99},
    {0x11D42, 0x11D42}, {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42},
    {0x16FF0, 0x16FF1}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE},
    {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF}};

const char *ae_tok_class_extra(char cls) {
    return cls == 'L' ? EXTRA_L : cls == 'N' ? EXTRA_N : "";
}

int ae_tok_nfc_opaque(uint32_t cp) {
    size_t lo = 0, hi = sizeof NFC_OPAQUE / sizeof NFC_OPAQUE[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < NFC_OPAQUE[mid][0])
            hi = mid;
        else if (cp > NFC_OPAQUE[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

// llama.cpp's own tokenize / detokenize / regex split, for scripts/compare_llama_cpp.py (a development
// check: it needs a llama.cpp source tree with libllama built). Files hold one hex-encoded UTF-8 string
// per line.
//   oracle VOCAB.gguf TEXTS      per text: ids, detokenize(ids), detokenize(ids with BOS/EOS), the pieces
//   oracle --split REGEXES TEXTS  per text: unicode_regex_split(text, regexes, byte_encode=false)
#include "llama.h"
#include "unicode.h"
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

static std::string unhex(const std::string & h) {
    std::string s;
    for (size_t i = 0; i + 1 < h.size(); i += 2) s.push_back((char) std::stoi(h.substr(i, 2), nullptr, 16));
    return s;
}
static std::string hex(const std::string & s) {
    static const char * d = "0123456789abcdef";
    std::string h;
    for (unsigned char c : s) { h.push_back(d[c >> 4]); h.push_back(d[c & 15]); }
    return h;
}
static std::vector<std::string> lines(const char * path) {
    std::ifstream f(path);
    std::vector<std::string> out;
    std::string l;
    while (std::getline(f, l)) out.push_back(unhex(l));
    return out;
}
static std::string detok(const llama_vocab * v, const std::vector<llama_token> & ids, bool remove_special, bool unparse) {
    std::string text(ids.size() * 16 + 16, '\0');
    int n = llama_detokenize(v, ids.data(), ids.size(), &text[0], text.size(), remove_special, unparse);
    if (n < 0) { text.resize(-n); n = llama_detokenize(v, ids.data(), ids.size(), &text[0], text.size(), remove_special, unparse); }
    text.resize(n);
    return text;
}
static std::vector<llama_token> tok(const llama_vocab * v, const std::string & s, bool add_special) {
    std::vector<llama_token> ids(s.size() * 2 + 16);
    int n = llama_tokenize(v, s.data(), s.size(), ids.data(), ids.size(), add_special, false);
    if (n < 0) { ids.resize(-n); n = llama_tokenize(v, s.data(), s.size(), ids.data(), ids.size(), add_special, false); }
    ids.resize(n);
    return ids;
}
int main(int argc, char ** argv) {
    if (argc == 4 && std::string(argv[1]) == "--split") {
        auto regexes = lines(argv[2]);
        for (auto & t : lines(argv[3])) {
            auto words = unicode_regex_split(t, regexes, false);
            std::string out;
            for (auto & w : words) { out += hex(w); out += ' '; }
            printf("%s\n", out.c_str());
        }
        return 0;
    }
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    auto mp = llama_model_default_params();
    mp.vocab_only = true;
    llama_model * m = llama_model_load_from_file(argv[1], mp);
    if (!m) { fprintf(stderr, "load failed\n"); return 1; }
    const llama_vocab * v = llama_model_get_vocab(m);
    for (auto & t : lines(argv[2])) {
        auto ids = tok(v, t, false);
        auto ids_s = tok(v, t, true);
        std::string s;
        for (auto i : ids) s += std::to_string(i) + ",";
        std::string pieces;
        for (auto i : ids) { char buf[256]; int n = llama_token_to_piece(v, i, buf, sizeof buf, 0, false); if (n > 0) pieces.append(buf, n); }
        // ids | detok(ids) | detok(ids with specials, remove_special=false) | printed pieces
        printf("%s %s %s %s\n", s.c_str(), hex(detok(v, ids, false, false)).c_str(),
               hex(detok(v, ids_s, false, false)).c_str(), hex(pieces).c_str());
    }
    llama_model_free(m);
    return 0;
}

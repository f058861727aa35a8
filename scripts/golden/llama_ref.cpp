// Reference forward pass: llama.cpp evaluates prompts on a GGUF model and
// reports last-position logits and a greedy continuation, so the edgellama
// forward pass can be compared against an implementation it shares no code with.
//
// Built by build_ref.sh against the llama.cpp tree vendored in the
// llama-cpp-python==0.3.36 sdist. See make_forward_goldens.sh for how its output
// becomes the committed goldens.
//
// usage: llama_ref -m MODEL -p PROMPTS -o OUT.json [-c N_CTX] [-t THREADS] [-n N_PREDICT]
//                  [-fa auto|on|off] [-kv f16|f32]
//
// -fa and -kv exist to measure how far llama.cpp's own settings move the
// logits (the noise floor a comparison must tolerate); the goldens use the
// defaults.
//
// PROMPTS holds the prompts separated by NUL bytes (they may contain newlines).
// OUT.json is pure ASCII: prompt and generated text are given as hex-encoded
// bytes, because a greedy continuation may end inside a multi-byte UTF-8
// character and a JSON string cannot carry invalid UTF-8.
//
// Each prompt is tokenized as llama.cpp does for generation (BOS per the model's
// add_bos flag, special tokens parsed), evaluated in one batch in a fresh
// context, then continued greedily (first maximum wins, as llama.cpp's greedy
// sampler does). Generation does not stop at end-of-generation tokens: every
// step is another forward pass to compare.

#include "llama.h"

#include <algorithm>
#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>
#include <vector>

static std::string g_log;

static void capture_log(enum ggml_log_level level, const char * text, void * /*user_data*/) {
    (void) level;
    g_log += text;
}

static std::string hex(const std::string & s) {
    static const char * digits = "0123456789abcdef";
    std::string out;
    out.reserve(s.size() * 2);
    for (unsigned char c : s) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

// JSON string for ASCII text; anything else is escaped as \u00XX.
static std::string json_ascii(const std::string & s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += (char) c;
        } else if (c < 0x20 || c >= 0x7f) {
            char buf[8];
            snprintf(buf, sizeof(buf), "\\u%04x", c);
            out += buf;
        } else {
            out += (char) c;
        }
    }
    return out + "\"";
}

// %.9g round-trips every float32 exactly.
static std::string f32(float v) {
    char buf[32];
    snprintf(buf, sizeof(buf), "%.9g", v);
    return buf;
}

static std::string piece(const llama_vocab * vocab, llama_token id) {
    std::vector<char> buf(64);
    int n = llama_token_to_piece(vocab, id, buf.data(), (int) buf.size(), 0, true);
    if (n < 0) {
        buf.resize(-n);
        n = llama_token_to_piece(vocab, id, buf.data(), (int) buf.size(), 0, true);
    }
    return n > 0 ? std::string(buf.data(), n) : std::string();
}

static bool decode(llama_context * ctx, llama_batch_ext * batch, const llama_token * toks, int n, int pos0) {
    llama_batch_ext_clear(batch);
    for (int i = 0; i < n; ++i) {
        const int32_t idx = llama_batch_ext_add_token(batch, 0, toks[i]);
        if (idx < 0) {
            return false;
        }
        const llama_pos pos = pos0 + i;
        llama_batch_ext_set_pos(batch, idx, &pos);
    }
    llama_batch_ext_set_output_logits(batch, n - 1, true);
    return llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch) == 0;
}

static void usage(const char * argv0) {
    fprintf(stderr,
            "usage: %s -m MODEL -p PROMPTS -o OUT.json [-c N_CTX] [-t THREADS] [-n N_PREDICT] [-fa auto|on|off] "
            "[-kv f16|f32]\n",
            argv0);
}

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");

    std::string model_path, prompts_path, out_path;
    int n_ctx = 512;
    int n_threads = 2;
    int n_predict = 32;
    std::string fa = "auto";
    std::string kv = "f16";
    const int n_top = 100;
    const int n_sample = 256;

    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) {
            usage(argv[0]);
            return 2;
        }
        const char * v = argv[++i];
        if (a == "-m") {
            model_path = v;
        } else if (a == "-p") {
            prompts_path = v;
        } else if (a == "-o") {
            out_path = v;
        } else if (a == "-c") {
            n_ctx = atoi(v);
        } else if (a == "-t") {
            n_threads = atoi(v);
        } else if (a == "-n") {
            n_predict = atoi(v);
        } else if (a == "-fa") {
            fa = v;
        } else if (a == "-kv") {
            kv = v;
        } else {
            usage(argv[0]);
            return 2;
        }
    }
    if (model_path.empty() || prompts_path.empty() || out_path.empty() || n_ctx <= 0 || n_threads <= 0 ||
        n_predict <= 0 || (fa != "auto" && fa != "on" && fa != "off") || (kv != "f16" && kv != "f32")) {
        usage(argv[0]);
        return 2;
    }

    std::vector<std::string> prompts;
    {
        std::ifstream f(prompts_path, std::ios::binary);
        if (!f) {
            fprintf(stderr, "cannot read %s\n", prompts_path.c_str());
            return 1;
        }
        std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        size_t start = 0;
        while (start <= all.size()) {
            size_t end = all.find('\0', start);
            if (end == std::string::npos) {
                end = all.size();
            }
            if (end > start) {
                prompts.push_back(all.substr(start, end - start));
            }
            start = end + 1;
        }
    }

    llama_log_set(capture_log, nullptr);
    llama_backend_init();

    llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mparams);
    if (!model) {
        fputs(g_log.c_str(), stderr);
        fprintf(stderr, "failed to load %s\n", model_path.c_str());
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    // The goldens keep the defaults of the pinned version (flash attention
    // "auto", F16 KV cache, n_batch/n_ubatch): they describe what a plain
    // llama.cpp run computes.
    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = n_ctx;
    cparams.n_threads = n_threads;
    cparams.n_threads_batch = n_threads;
    cparams.no_perf = true;
    if (fa == "on") {
        cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    } else if (fa == "off") {
        cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    }
    if (kv == "f32") {
        cparams.type_k = GGML_TYPE_F32;
        cparams.type_v = GGML_TYPE_F32;
    }

    std::string fa_log;
    std::string out = "{\n";
    out += "  \"n_vocab\": " + std::to_string(n_vocab) + ",\n";
    out += "  \"add_bos\": " + std::string(llama_vocab_get_add_bos(vocab) ? "true" : "false") + ",\n";
    out += "  \"n_ctx\": " + std::to_string(n_ctx) + ",\n";
    out += "  \"n_threads\": " + std::to_string(n_threads) + ",\n";
    out += "  \"flash_attn_type\": " + json_ascii(llama_flash_attn_type_name(cparams.flash_attn_type)) + ",\n";
    out += "  \"type_k\": " + json_ascii(ggml_type_name(cparams.type_k)) + ",\n";
    out += "  \"type_v\": " + json_ascii(ggml_type_name(cparams.type_v)) + ",\n";
    out += "  \"n_batch\": " + std::to_string(cparams.n_batch) + ",\n";
    out += "  \"n_ubatch\": " + std::to_string(cparams.n_ubatch) + ",\n";
    out += "  \"system_info\": " + json_ascii(llama_print_system_info()) + ",\n";
    out += "  \"cases\": [\n";

    for (size_t pi = 0; pi < prompts.size(); ++pi) {
        const std::string & prompt = prompts[pi];
        const int n_prompt = -llama_tokenize(vocab, prompt.c_str(), (int32_t) prompt.size(), nullptr, 0, true, true);
        std::vector<llama_token> toks(std::max(n_prompt, 0));
        if (n_prompt <= 0 ||
            llama_tokenize(vocab, prompt.c_str(), (int32_t) prompt.size(), toks.data(), n_prompt, true, true) < 0) {
            fprintf(stderr, "failed to tokenize prompt %zu\n", pi);
            return 1;
        }
        if (n_prompt + n_predict > n_ctx) {
            fprintf(stderr, "prompt %zu: %d tokens + %d do not fit n_ctx %d\n", pi, n_prompt, n_predict, n_ctx);
            return 1;
        }

        g_log.clear();
        llama_context * ctx = llama_init_from_model(model, cparams);
        if (!ctx) {
            fputs(g_log.c_str(), stderr);
            fprintf(stderr, "failed to create context\n");
            return 1;
        }
        if (pi == 0) {
            // The flash-attention choice is resolved ("auto") while the context
            // is built; keep llama.cpp's own words for it.
            size_t pos = 0;
            while (pos < g_log.size()) {
                size_t eol = g_log.find('\n', pos);
                if (eol == std::string::npos) {
                    eol = g_log.size();
                }
                const std::string line = g_log.substr(pos, eol - pos);
                std::string lower = line;
                std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
                const bool wanted = lower.find("flash attention") != std::string::npos ||
                                    lower.find("flash_attn ") != std::string::npos ||
                                    lower.find(" k (") != std::string::npos;
                if (wanted && lower.find("input tensor") == std::string::npos) {
                    fa_log += line + "\n";
                }
                pos = eol + 1;
            }
        }
        llama_batch_ext * batch = llama_batch_ext_init(ctx);

        if (!decode(ctx, batch, toks.data(), n_prompt, 0)) {
            fputs(g_log.c_str(), stderr);
            fprintf(stderr, "prompt %zu: decode failed\n", pi);
            return 1;
        }
        const float * logits = llama_get_logits_ith(ctx, -1);
        if (!logits) {
            fprintf(stderr, "prompt %zu: no logits\n", pi);
            return 1;
        }
        std::vector<float> last(logits, logits + n_vocab);

        std::vector<int> order(n_vocab);
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + n_top, order.end(), [&](int a, int b) {
            return last[a] > last[b] || (last[a] == last[b] && a < b);
        });

        std::vector<llama_token> gen;
        std::vector<float> top1s, top2s;
        std::vector<int> second_ids;
        std::string text;
        std::vector<float> cur = last;
        int pos = n_prompt;
        for (int step = 0; step < n_predict; ++step) {
            int best = 0;
            for (int i = 1; i < n_vocab; ++i) {
                if (cur[i] > cur[best]) {
                    best = i;
                }
            }
            int second = best == 0 ? 1 : 0;
            for (int i = 0; i < n_vocab; ++i) {
                if (i != best && cur[i] > cur[second]) {
                    second = i;
                }
            }
            gen.push_back(best);
            top1s.push_back(cur[best]);
            top2s.push_back(cur[second]);
            second_ids.push_back(second);
            text += piece(vocab, best);
            if (step + 1 == n_predict) {
                break;
            }
            llama_token t = best;
            if (!decode(ctx, batch, &t, 1, pos)) {
                fprintf(stderr, "prompt %zu: decode failed at step %d\n", pi, step);
                return 1;
            }
            ++pos;
            const float * l = llama_get_logits_ith(ctx, -1);
            if (!l) {
                fprintf(stderr, "prompt %zu: no logits at step %d\n", pi, step);
                return 1;
            }
            cur.assign(l, l + n_vocab);
        }

        out += "    {\n";
        out += "      \"prompt_hex\": \"" + hex(prompt) + "\",\n";
        out += "      \"prompt_tokens\": [";
        for (int i = 0; i < n_prompt; ++i) {
            out += (i ? ", " : "") + std::to_string(toks[i]);
        }
        out += "],\n      \"last_logits_top\": [";
        for (int i = 0; i < n_top; ++i) {
            out += (i ? ", " : "") + std::string("[") + std::to_string(order[i]) + ", " + f32(last[order[i]]) + "]";
        }
        // Ids spread evenly over the whole vocabulary, both ends included.
        out += "],\n      \"last_logits_sample\": [";
        for (int i = 0; i < n_sample; ++i) {
            const int id = (int) (((long long) i * (n_vocab - 1)) / (n_sample - 1));
            out += (i ? ", " : "") + std::string("[") + std::to_string(id) + ", " + f32(last[id]) + "]";
        }
        out += "],\n      \"greedy_tokens\": [";
        for (size_t i = 0; i < gen.size(); ++i) {
            out += (i ? ", " : "") + std::to_string(gen[i]);
        }
        out += "],\n      \"greedy_top1_logits\": [";
        for (size_t i = 0; i < gen.size(); ++i) {
            out += (i ? ", " : "") + f32(top1s[i]);
        }
        out += "],\n      \"greedy_top2_logits\": [";
        for (size_t i = 0; i < gen.size(); ++i) {
            out += (i ? ", " : "") + f32(top2s[i]);
        }
        out += "],\n      \"greedy_top2_tokens\": [";
        for (size_t i = 0; i < gen.size(); ++i) {
            out += (i ? ", " : "") + std::to_string(second_ids[i]);
        }
        out += "],\n      \"greedy_text_hex\": \"" + hex(text) + "\"\n";
        out += std::string("    }") + (pi + 1 < prompts.size() ? "," : "") + "\n";

        llama_batch_ext_free(batch);
        llama_free(ctx);
    }
    out += "  ],\n";
    out += "  \"context_log\": " + json_ascii(fa_log) + "\n}\n";

    llama_model_free(model);
    llama_backend_free();

    FILE * f = fopen(out_path.c_str(), "wb");
    if (!f || fwrite(out.data(), 1, out.size(), f) != out.size() || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", out_path.c_str());
        return 1;
    }
    return 0;
}

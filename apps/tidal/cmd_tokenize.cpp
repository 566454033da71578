// `tidal tokenize --tokenizer PATH --json`: ids of stdin's text, as Hugging Face would give them.
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "apps/tidal/commands.h"
#include "model/tokenizer/tokenizer.h"

namespace tidal::cli {

Command add_tokenize_command(CLI::App& app) {
  struct Options {
    std::string tokenizer;
    bool json = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* command = app.add_subcommand("tokenize", "Encode all of stdin (UTF-8) into token ids");
  command->add_option("--tokenizer", options->tokenizer, "tokenizer.json or a model directory")
      ->required();
  command->add_flag("--json", options->json, "print {\"ids\":[...]}");
  return [options]() {
    const Tokenizer tokenizer = Tokenizer::from_file(options->tokenizer);
    const std::string text{std::istreambuf_iterator<char>(std::cin), {}};
    const std::vector<int32_t> ids = tokenizer.encode(text);
    if (options->json) {
      std::cout << nlohmann::json{{"ids", ids}}.dump() << "\n";
    } else {
      for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
      std::cout << "\n";
    }
    return 0;
  };
}

}  // namespace tidal::cli

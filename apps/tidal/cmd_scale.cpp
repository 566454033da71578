// `tidal scale N`: ask a running server to scale to N ranks and follow the operation to its end.
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>

#include "apps/tidal/commands.h"
#include "common/error.h"
#include "server/http/http_client.h"

namespace tidal::cli {
namespace {

struct ScaleOptions {
  int ranks = 0;
  std::string server = "http://127.0.0.1:8000";
  std::vector<int> remove_ranks;
  bool wait = true;
  int timeout_s = 600;
  std::string admin_api_key;
};

nlohmann::json parse_reply(const HttpReply& reply, const std::string& what) {
  nlohmann::json body = nlohmann::json::parse(reply.body, nullptr, false);
  if (body.is_discarded()) TIDAL_FAIL(what, ": HTTP ", reply.status, ", not JSON: ", reply.body);
  if (reply.status >= 400) {
    const std::string message =
        body.contains("error") ? body["error"].value("message", reply.body) : reply.body;
    TIDAL_FAIL(what, ": HTTP ", reply.status, ": ", message);
  }
  return body;
}

int run_scale(const ScaleOptions& options) {
  std::string key = options.admin_api_key;
  if (const char* from_env = std::getenv("TIDAL_ADMIN_API_KEY"); key.empty() && from_env) {
    key = from_env;
  }
  std::vector<std::pair<std::string, std::string>> headers;
  if (!key.empty()) headers.emplace_back("Authorization", "Bearer " + key);
  const auto call = [&](const std::string& method, const std::string& path,
                        const std::string& body) {
    return parse_reply(
        http_call(options.server, method, path, body, headers, std::chrono::seconds(30)),
        method + " " + path);
  };
  nlohmann::json request = {{"ranks", options.ranks}};
  if (!options.remove_ranks.empty()) request["remove_ranks"] = options.remove_ranks;
  nlohmann::json operation = call("POST", "/v1/admin/scale", request.dump());
  const std::string id = operation.at("id").get<std::string>();
  std::cerr << "scale " << id << ": " << operation.at("from_ranks") << " -> " << options.ranks
            << " ranks\n";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(options.timeout_s);
  std::string phase = operation.at("phase").get<std::string>();
  while (options.wait && phase != "done" && phase != "failed") {
    if (std::chrono::steady_clock::now() > deadline) {
      std::cerr << "scale " << id << " still " << phase << " after " << options.timeout_s << " s\n";
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    operation = call("GET", "/v1/admin/scale/" + id, "");
    phase = operation.at("phase").get<std::string>();
  }
  std::cout << operation.dump(2) << "\n";
  return phase == "failed" ? 1 : 0;
}

}  // namespace

Command add_scale_command(CLI::App& app) {
  auto options = std::make_shared<ScaleOptions>();
  CLI::App* command =
      app.add_subcommand("scale", "Scale a running server to N ranks (POST /v1/admin/scale)");
  command->add_option("ranks", options->ranks, "the target number of ranks")->required();
  command->add_option("--server", options->server, "the server's base URL");
  command
      ->add_option("--remove-ranks", options->remove_ranks,
                   "scale-down: which ranks leave (default: the least loaded)")
      ->delimiter(',');
  command->add_flag("!--no-wait", options->wait, "return once the operation has started");
  command->add_option("--timeout", options->timeout_s, "seconds to wait for the outcome");
  command->add_option("--admin-api-key", options->admin_api_key,
                      "the server's --admin-api-key (default: $TIDAL_ADMIN_API_KEY)");
  return [options]() { return run_scale(*options); };
}

}  // namespace tidal::cli

// `tidal scale N`: ask a running server to scale to N ranks and follow the operation to its end.
#include <httplib.h>

#include <chrono>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>

#include "apps/tidal/commands.h"
#include "common/error.h"

namespace tidal::cli {
namespace {

struct ScaleOptions {
  int ranks = 0;
  std::string server = "http://127.0.0.1:8000";
  std::vector<int> remove_ranks;
  bool wait = true;
  int timeout_s = 600;
};

nlohmann::json parse_reply(const httplib::Result& reply, const std::string& what) {
  if (!reply) TIDAL_FAIL(what, ": no reply (", httplib::to_string(reply.error()), ")");
  nlohmann::json body = nlohmann::json::parse(reply->body, nullptr, false);
  if (body.is_discarded()) TIDAL_FAIL(what, ": HTTP ", reply->status, ", not JSON: ", reply->body);
  if (reply->status >= 400) {
    const std::string message =
        body.contains("error") ? body["error"].value("message", reply->body) : reply->body;
    TIDAL_FAIL(what, ": HTTP ", reply->status, ": ", message);
  }
  return body;
}

int run_scale(const ScaleOptions& options) {
  httplib::Client client(options.server);
  client.set_read_timeout(std::chrono::seconds(30));
  nlohmann::json request = {{"ranks", options.ranks}};
  if (!options.remove_ranks.empty()) request["remove_ranks"] = options.remove_ranks;
  nlohmann::json operation = parse_reply(
      client.Post("/v1/admin/scale", request.dump(), "application/json"), "POST /v1/admin/scale");
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
    operation = parse_reply(client.Get("/v1/admin/scale/" + id), "GET /v1/admin/scale/" + id);
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
  return [options]() { return run_scale(*options); };
}

}  // namespace tidal::cli

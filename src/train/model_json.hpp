#pragma once
// A ModelConfig as JSON (the model file's header and the checkpoint manifest). The model's
// shape keys only; model.recompute is a run setting and is not stored.
#include <nlohmann/json.hpp>

#include "nuri/model.hpp"

namespace nuri {

nlohmann::json model_config_to_json(const ModelConfig& c);
// Throws nlohmann::json exceptions on a missing or mistyped key (callers wrap them with the file).
ModelConfig model_config_from_json(const nlohmann::json& j);

}  // namespace nuri

// The named architectures (src/model/model_configs/*.json, compiled into the library): the nine
// OpenAI releases have the parameter counts open_clip publishes for them
// (../shared/data/reference_results/openclip_results.csv, "params (M)", two decimals), every
// named config validates, names itself back through known_model_name, and survives a round
// trip through open_clip's JSON; an unknown name lists the known ones.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "core/error.h"
#include "model/config.h"
#include "model/weights.h"

namespace {

std::map<std::string, double> published_openai_params() {
  std::ifstream in(std::string(CLIP_SHARED_DATA) + "/reference_results/openclip_results.csv");
  std::map<std::string, double> out;
  std::string line;
  std::getline(in, line);  // header: name,pretrained,params (M),...
  while (std::getline(in, line)) {
    std::stringstream row(line);
    std::string name, pretrained, params;
    std::getline(row, name, ',');
    std::getline(row, pretrained, ',');
    std::getline(row, params, ',');
    if (pretrained == "openai" && name.find("quickgelu") == std::string::npos) out[name] = std::stod(params);
  }
  return out;
}

TEST(NamedModelConfigs, OpenAIArchitecturesHaveThePublishedParameterCounts) {
  const auto published = published_openai_params();
  ASSERT_EQ(published.size(), 9u) << "reference table not found or changed";
  for (const auto& [name, millions] : published) {
    const clip::ModelConfig c = clip::named_model_config(name);
    EXPECT_EQ(c.name, name);
    EXPECT_EQ(c.activation, clip::Activation::QuickGELU) << name;
    EXPECT_NEAR(double(clip::parameter_count(c)) / 1e6, millions, 0.005 + 1e-9) << name;
  }
}

TEST(NamedModelConfigs, EveryNamedConfigValidatesAndRoundTrips) {
  const auto names = clip::model_config_names();
  EXPECT_GE(names.size(), 12u);  // nine OpenAI + the three recipe models
  for (const std::string& name : names) {
    const clip::ModelConfig c = clip::named_model_config(name);
    EXPECT_NO_THROW(clip::validate_model_config(c, name));
    EXPECT_EQ(clip::known_model_name(c), name);
    const clip::ModelConfig back = clip::parse_model_config_json(clip::model_config_to_openclip_json(c), name);
    EXPECT_EQ(back.name, name);
    EXPECT_EQ(back.activation, c.activation);
    EXPECT_EQ(clip::parameter_count(back), clip::parameter_count(c)) << name;
  }
  const clip::ModelConfig tiny = clip::resolve_model_config("cifar10-vit-tiny");
  EXPECT_EQ(tiny.vision.image_size, 32);
  EXPECT_EQ(tiny.embed_dim, 128);
}

TEST(NamedModelConfigs, AnUnknownNameListsTheKnownOnes) {
  try {
    (void)clip::resolve_model_config("ViT-Q-99");
    FAIL() << "no error";
  } catch (const clip::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("ViT-Q-99"), std::string::npos) << m;
    EXPECT_NE(m.find("RN50x64"), std::string::npos) << m;
    EXPECT_NE(m.find("cifar10-rn-tiny"), std::string::npos) << m;
  }
}

}  // namespace

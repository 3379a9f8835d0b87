#pragma once
// The one reproducible random generator (parameter initialisation, the loader's orders and
// augmentations, few-shot sampling): splitmix64 for the bits, Box-Muller for normals. Unlike
// the standard library's distributions, its output is the same on every platform, so a seed
// names a model, an order, a subset.
#include <cmath>
#include <cstdint>

namespace clip {

// splitmix64's finaliser: mixes one 64-bit value (stream seeds from (seed, salt, epoch, index)).
inline uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}


class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : state_(seed) {}
  uint64_t next_u64() {
    const uint64_t z = mix64(state_);
    state_ += 0x9E3779B97F4A7C15ull;
    return z;
  }
  // Uniform in [0, n) by a 128-bit multiply (bias < n / 2^64; unlike
  // std::uniform_int_distribution the same on every standard library).
  uint64_t below(uint64_t n) { return uint64_t((unsigned __int128)next_u64() * n >> 64); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }
  // Standard normal (Box-Muller; the second value of each pair is kept for the next call).
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform();
    while (u1 <= 0) u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2.0 * M_PI * u2);
    has_spare_ = true;
    return r * std::cos(2.0 * M_PI * u2);
  }

 private:
  uint64_t state_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace clip

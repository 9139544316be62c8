// Deprecated name, kept so that existing programs still build: the ablation's layers are in
// torch_lru/layers.h (modules) and torch_lru/layer_math.h (their math).
#pragma once

#include "torch_lru/layers.h"

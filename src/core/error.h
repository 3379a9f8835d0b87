#pragma once
// clip::Error lives in the public header so library users can catch it.
#include "clip/error.h"

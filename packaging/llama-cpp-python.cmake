# Build only what localrag runs of llama-cpp-python: libllama and ggml.
#
# The README's install command passes this file to CMake through
#   CMAKE_ARGS="-DCMAKE_PROJECT_llama.cpp_INCLUDE=$PWD/packaging/llama-cpp-python.cmake"
# so CMake includes it right after llama.cpp's project() call, i.e. after llama-cpp-python's
# own CMakeLists.txt has set its defaults. Both settings below are forced because
# llama-cpp-python forces LLAMA_BUILD_COMMON on and cannot be told otherwise on the command line.
#
# - common (llama.cpp's C++ helpers for its command-line tools, with an HTTP client) is never
#   loaded by the Python bindings: 41% of the compile time.
# - mtmd/llava (image and audio input) is loaded only by llama-cpp-python's multimodal chat
#   handlers, which a text model like SmolLM2 never uses: 23% of the compile time.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library" FORCE)
set(LLAVA_BUILD OFF CACHE BOOL "Build llava shared library and install alongside python package" FORCE)

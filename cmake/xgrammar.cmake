# xgrammar's C++ core as a static library of our own, over the sources scripts/setup.sh unpacks
# into .third_party/ (upstream's CMakeLists forces its Python bindings on and builds with -flto
# and -Werror, neither of which we want).
set(TIDAL_XGRAMMAR_ROOT "${PROJECT_SOURCE_DIR}/.third_party/xgrammar-0.2.9"
    CACHE PATH "the unpacked xgrammar 0.2.9 sources (scripts/setup.sh)")
if(NOT EXISTS "${TIDAL_XGRAMMAR_ROOT}/include/xgrammar/xgrammar.h")
  message(FATAL_ERROR "xgrammar's sources are not at ${TIDAL_XGRAMMAR_ROOT}: run scripts/setup.sh")
endif()
file(GLOB_RECURSE TIDAL_XGRAMMAR_SOURCES CONFIGURE_DEPENDS "${TIDAL_XGRAMMAR_ROOT}/cpp/*.cc")
list(FILTER TIDAL_XGRAMMAR_SOURCES EXCLUDE REGEX "/cpp/tvm_ffi/")
add_library(xgrammar STATIC ${TIDAL_XGRAMMAR_SOURCES})
target_include_directories(xgrammar SYSTEM PUBLIC "${TIDAL_XGRAMMAR_ROOT}/include"
                                                 "${TIDAL_XGRAMMAR_ROOT}/3rdparty/dlpack/include")
target_include_directories(xgrammar SYSTEM PRIVATE "${TIDAL_XGRAMMAR_ROOT}/3rdparty/picojson")
target_compile_definitions(xgrammar PUBLIC XGRAMMAR_ENABLE_CPPTRACE=0
                                           XGRAMMAR_ENABLE_INTERNAL_CHECK=0)
# C++17 as upstream builds it (clang-14 rejects one of its files as C++20); its warnings are not
# ours to fix.
set_target_properties(xgrammar PROPERTIES CXX_STANDARD 17 POSITION_INDEPENDENT_CODE ON)
target_compile_options(xgrammar PRIVATE -w)
target_link_libraries(xgrammar PUBLIC Threads::Threads)

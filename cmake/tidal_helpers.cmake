# Wrappers that give every tidal target the same standard, warnings and include root.

set(TIDAL_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wconversion
    -Wno-sign-conversion)
if(TIDAL_WERROR)
  list(APPEND TIDAL_WARNINGS -Werror)
endif()
# GCC 12 at -O3 reports -Wrestrict on plain std::string concatenation (GCC bug 105329).
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  list(APPEND TIDAL_WARNINGS -Wno-restrict)
endif()

# tidal_add_library(NAME SOURCES a.cpp ... [DEPS lib ...] [PUBLIC_DEPS lib ...])
function(tidal_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PUBLIC_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${TIDAL_WARNINGS}>)
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} PUBLIC ${ARG_PUBLIC_DEPS})
endfunction()

# tidal_add_test(NAME SOURCES a.cpp ... [DEPS lib ...] [LABELS l ...] [TIMEOUT s])
function(tidal_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE ${TIDAL_WARNINGS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE
    TIDAL_SOURCE_DIR="${PROJECT_SOURCE_DIR}" TIDAL_BINARY_DIR="${PROJECT_BINARY_DIR}")
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}")
endfunction()

# tidal_add_pytest(NAME PATH [TIMEOUT s]): a pytest file or folder against the built tidal, with
# the Python tooling scripts/setup.sh installs into .venv. Without that venv the test fails with a
# message saying so (a skipped suite would look green while testing nothing).
function(tidal_add_pytest name path)
  cmake_parse_arguments(ARG "" "TIMEOUT" "" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  add_test(NAME ${name}
    COMMAND sh -c [=[
if [ ! -x "$0" ]; then
  echo "$0 does not exist: run scripts/setup.sh to create .venv with tests/requirements.txt" >&2
  exit 1
fi
exec "$0" -m pytest "$1" -q -p no:cacheprovider
]=] "${PROJECT_SOURCE_DIR}/.venv/bin/python" "${path}")
  set_tests_properties(${name} PROPERTIES
    TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "TIDAL_BINARY=${PROJECT_BINARY_DIR}/tidal;TIDAL_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
endfunction()

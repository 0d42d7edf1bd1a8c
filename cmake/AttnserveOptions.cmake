# Compiler settings shared by every attnserve target.

# Warnings as errors on our own code only (generated protobuf code is exempt).
function(attnserve_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror)
endfunction()

if(ATTNSERVE_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# The libFuzzer targets of fuzz/ (clang only): everything built with
# AddressSanitizer, UndefinedBehaviorSanitizer (float-cast-overflow named,
# though clang's `undefined` has it) and the fuzzer's coverage
# instrumentation (fuzzer-no-link: only the targets link libFuzzer's main).
# Assertions stay on: the build type's flags must not define NDEBUG
# (scripts/fuzz.sh configures -O1 -g1).
option(ATTNSERVE_FUZZ "Build the libFuzzer targets (clang only)" OFF)
# ThreadSanitizer on everything (clang only; scripts/test.sh
# --thread-sanitize builds the unit tests with it and runs the server's).
option(ATTNSERVE_THREAD_SANITIZE "Build with ThreadSanitizer (clang only)" OFF)
if(ATTNSERVE_FUZZ OR ATTNSERVE_THREAD_SANITIZE)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "ATTNSERVE_FUZZ and ATTNSERVE_THREAD_SANITIZE need "
            "clang (-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang)")
  endif()
  if(ATTNSERVE_SANITIZE OR (ATTNSERVE_FUZZ AND ATTNSERVE_THREAD_SANITIZE))
    message(FATAL_ERROR "ATTNSERVE_SANITIZE, ATTNSERVE_FUZZ and "
            "ATTNSERVE_THREAD_SANITIZE exclude each other")
  endif()
endif()
if(ATTNSERVE_THREAD_SANITIZE)
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
endif()
if(ATTNSERVE_FUZZ)
  string(TOUPPER "${CMAKE_BUILD_TYPE}" build_type)
  if("${CMAKE_CXX_FLAGS} ${CMAKE_CXX_FLAGS_${build_type}}" MATCHES "NDEBUG")
    message(FATAL_ERROR "ATTNSERVE_FUZZ keeps assertions on: the C++ flags of "
            "build type ${CMAKE_BUILD_TYPE} must not define NDEBUG")
  endif()
  add_compile_options(
    -fsanitize=address,undefined,float-cast-overflow,fuzzer-no-link
    -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined,float-cast-overflow)
endif()

# How GoogleTest binaries appear in ctest. By default each binary (or each
# of its SHARDS) is one ctest test: its cases run in one process, one after
# the other, and write their results to <build>/test-results/<test>.xml
# (scripts/test-summary.sh counts them). With ATTNSERVE_TEST_PER_CASE=ON,
# every case is its own ctest test and process (gtest_discover_tests): handy
# for `ctest -R Suite.Case`, but process start-up then dominates a full run.
option(ATTNSERVE_TEST_PER_CASE "One ctest test (and process) per GoogleTest case" OFF)
set(ATTNSERVE_TEST_RESULTS_DIR ${CMAKE_BINARY_DIR}/test-results)

# Test code, i.e. the test binaries and their fixtures (not the float64
# reference in attnserve_testing, where the kernel grids spend their time),
# is compiled at ATTNSERVE_TEST_OPTIMIZATION whatever the build type (the
# code under test keeps the build type's flags), and with precompiled
# headers: the GoogleTest, abseil, gRPC and generated protobuf headers that
# nearly every test includes are parsed once per build, not once per source.
# Together they halve the compile time of the tests.
set(ATTNSERVE_TEST_OPTIMIZATION -O1 CACHE STRING
    "Optimization flag of the test code (not of the code under test)")

#   attnserve_test_pch(NAME name LIBS lib1 lib2 HEADERS <a.h> <b.h>)
# makes the target whose precompiled headers test code reuses. Only targets
# with the same compile flags can share them (LIBS gives the flags); GCC
# ignores a precompiled header that does not fit, warns (-Winvalid-pch) and
# reads the headers instead. CMAKE_DISABLE_PRECOMPILE_HEADERS=ON turns them
# off (e.g. to check that every test includes what it uses).
function(attnserve_test_pch)
  cmake_parse_arguments(P "" "NAME" "LIBS;HEADERS" ${ARGN})
  set(source ${CMAKE_CURRENT_BINARY_DIR}/${P_NAME}.cc)
  file(CONFIGURE OUTPUT ${source} CONTENT "// Precompiled headers of the tests.\n")
  add_library(${P_NAME} STATIC ${source})
  target_link_libraries(${P_NAME} PRIVATE ${P_LIBS})
  attnserve_warnings(${P_NAME})
  target_compile_options(${P_NAME} PRIVATE ${ATTNSERVE_TEST_OPTIMIZATION})
  target_precompile_headers(${P_NAME} PRIVATE ${P_HEADERS})
endfunction()

# Compiles `target` as test code, with the precompiled headers of `pch`.
function(attnserve_test_code target pch)
  target_compile_options(${target} PRIVATE ${ATTNSERVE_TEST_OPTIMIZATION}
                                           -Wno-error=invalid-pch)
  if(TARGET ${pch})
    target_precompile_headers(${target} REUSE_FROM ${pch})
  endif()
endfunction()

# A directory may also add plain ctest tests that run one of its test
# binaries another way (add_test(NAME x COMMAND some_test --gtest_filter=...)
# with an ENVIRONMENT of its own). At the end of the directory each of its
# tests without a GTEST_OUTPUT gets one, so that scripts/test-summary.sh
# counts their cases as well (a program that is not GoogleTest ignores it).
function(attnserve_results_of_plain_tests)
  get_property(tests DIRECTORY PROPERTY TESTS)
  foreach(t IN LISTS tests)
    get_test_property(${t} ENVIRONMENT env)
    if(NOT env MATCHES "GTEST_OUTPUT=")
      string(REPLACE "/" "." results_name ${t})
      set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT
                   GTEST_OUTPUT=xml:${ATTNSERVE_TEST_RESULTS_DIR}/${results_name}.xml)
    endif()
  endforeach()
endfunction()

# One helper registers each GoogleTest binary with ctest.
#   attnserve_add_test(NAME name SOURCES a.cc b.cc LIBS lib1 lib2
#                      [LABELS l1 l2] [TIMEOUT seconds] [SHARDS n]
#                      [COST seconds])
# Labels: the directory's name (core, server, client, e2e) and LABELS, so
# that suites can be selected with `ctest -L`. SHARDS splits a long binary
# into n ctest tests (GoogleTest's GTEST_TOTAL_SHARDS / GTEST_SHARD_INDEX)
# that ctest can run in parallel. TIMEOUT bounds one case in per-case mode;
# a whole binary or shard gets at least 600 s. COST is about how long the
# binary (all its shards together) runs in Release: `ctest -j` starts the
# costliest tests first, so that a long one does not start last and run
# alone at the end (ctest only learns the costs from a previous run, which a
# fresh build does not have).
function(attnserve_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT;SHARDS;COST" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  attnserve_warnings(${T_NAME})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  if(ATTNSERVE_THREAD_SANITIZE)
    # abseil's locking, visible to ThreadSanitizer (tests/tsan/).
    target_link_libraries(${T_NAME} PRIVATE attnserve_tsan_absl)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  if(NOT T_SHARDS)
    set(T_SHARDS 1)
  endif()
  get_filename_component(dir_label ${CMAKE_CURRENT_SOURCE_DIR} NAME)
  set(labels ${dir_label} ${T_LABELS})
  list(REMOVE_DUPLICATES labels)
  if(NOT dir_label STREQUAL "e2e")
    set_property(GLOBAL APPEND PROPERTY ATTNSERVE_UNIT_TESTS ${T_NAME})
    if("server" IN_LIST labels)
      set_property(GLOBAL APPEND PROPERTY ATTNSERVE_SERVER_UNIT_TESTS ${T_NAME})
    endif()
  endif()
  # The core's tests share the core headers; the others the gRPC ones.
  if(dir_label STREQUAL "core")
    attnserve_test_code(${T_NAME} attnserve_test_pch_core)
  else()
    attnserve_test_code(${T_NAME} attnserve_test_pch_rpc)
  endif()

  if(ATTNSERVE_TEST_PER_CASE)
    include(GoogleTest)
    gtest_discover_tests(${T_NAME} PROPERTIES LABELS ${dir_label}
                         TIMEOUT ${T_TIMEOUT} DISCOVERY_TIMEOUT 60)
    # gtest_discover_tests keeps one label only; a file run after the
    # discovered tests are added gives each of them every label.
    list(LENGTH labels label_count)
    if(label_count GREATER 1)
      set(labels_file ${CMAKE_CURRENT_BINARY_DIR}/${T_NAME}_labels.cmake)
      file(WRITE ${labels_file}
           "foreach(t IN LISTS ${T_NAME}_TESTS)\n"
           "  set_tests_properties(\"\${t}\" PROPERTIES LABELS \"${labels}\")\n"
           "endforeach()\n")
      set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${labels_file})
    endif()
    return()
  endif()

  if(T_TIMEOUT LESS 600)
    set(T_TIMEOUT 600)
  endif()
  get_property(results_deferred DIRECTORY PROPERTY ATTNSERVE_TEST_RESULTS_DEFERRED)
  if(NOT results_deferred)
    set_property(DIRECTORY PROPERTY ATTNSERVE_TEST_RESULTS_DEFERRED ON)
    cmake_language(DEFER CALL attnserve_results_of_plain_tests)
  endif()
  math(EXPR last_shard "${T_SHARDS} - 1")
  foreach(shard RANGE ${last_shard})
    if(T_SHARDS EQUAL 1)
      set(test_name ${T_NAME})
      set(shard_env "")
    else()
      set(test_name ${T_NAME}/${shard})
      set(shard_env GTEST_TOTAL_SHARDS=${T_SHARDS} GTEST_SHARD_INDEX=${shard})
    endif()
    string(REPLACE "/" "." results_name ${test_name})
    set(env GTEST_OUTPUT=xml:${ATTNSERVE_TEST_RESULTS_DIR}/${results_name}.xml ${shard_env})
    add_test(NAME ${test_name} COMMAND ${T_NAME})
    set_tests_properties(${test_name} PROPERTIES
      LABELS "${labels}" TIMEOUT ${T_TIMEOUT} ENVIRONMENT "${env}")
    if(T_COST)
      math(EXPR shard_cost "${T_COST} / ${T_SHARDS}")
      set_tests_properties(${test_name} PROPERTIES COST ${shard_cost})
    endif()
  endforeach()
endfunction()

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

# One helper registers each GoogleTest binary with ctest.
#   attnserve_add_test(NAME name SOURCES a.cc b.cc LIBS lib1 lib2 [LABELS l1 l2])
function(attnserve_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  attnserve_warnings(${T_NAME})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  include(GoogleTest)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  # Every test is labelled with its directory (core, server, client, e2e) so
  # that suites can be selected with `ctest -L`.
  get_filename_component(dir_label ${CMAKE_CURRENT_SOURCE_DIR} NAME)
  gtest_discover_tests(${T_NAME} PROPERTIES LABELS ${dir_label}
                       TIMEOUT ${T_TIMEOUT} DISCOVERY_TIMEOUT 60)
  # gtest_discover_tests keeps one label only; a file run after the
  # discovered tests are added gives each of them every label.
  set(labels ${dir_label} ${T_LABELS})
  list(REMOVE_DUPLICATES labels)
  list(LENGTH labels label_count)
  if(label_count GREATER 1)
    set(labels_file ${CMAKE_CURRENT_BINARY_DIR}/${T_NAME}_labels.cmake)
    file(WRITE ${labels_file}
         "foreach(t IN LISTS ${T_NAME}_TESTS)\n"
         "  set_tests_properties(\"\${t}\" PROPERTIES LABELS \"${labels}\")\n"
         "endforeach()\n")
    set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${labels_file})
  endif()
endfunction()

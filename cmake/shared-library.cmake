# libtcr.so (target tcr_shared, tcr::shared): the C API of libtcr.a in a shared library with a
# SONAME, for runtimes written in C and for extensions loaded with dlopen: two extensions that
# link it share one tcr (its signals, handle table, tid index, each thread's record), where two
# that each linked libtcr.a would carry a copy each.
# - It holds every object of libtcr.a (WHOLE_ARCHIVE), compiled once: PIC, hidden visibility.
# - It exports the tcr_* functions and nothing else (capi/libtcr.map, checked by
#   tests/shared_library_test.sh): the C++ API is not part of its ABI, only of the static library.
# - SONAME libtcr.so.<major>: within a major version functions are only added, struct fields only
#   appended behind .size, enum and step values never change (capi/tcr.h says so).
add_library(tcr_shared SHARED ${PROJECT_SOURCE_DIR}/capi/shared_library.c)
add_library(tcr::shared ALIAS tcr_shared)
set_target_properties(tcr_shared PROPERTIES
  OUTPUT_NAME tcr
  EXPORT_NAME shared
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}
  C_VISIBILITY_PRESET hidden
  LINK_DEPENDS ${PROJECT_SOURCE_DIR}/capi/libtcr.map)
target_include_directories(tcr_shared PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/capi>
                                             $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
                                             $<INSTALL_INTERFACE:include/tcr>)
# libtcr.a's own dependencies (spdlog, Boehm, pthread) become the shared library's DT_NEEDED;
# its users need none of them at compile time, so they are private here.
target_link_libraries(tcr_shared PRIVATE "$<LINK_LIBRARY:WHOLE_ARCHIVE,tcr>")
if(APPLE)
  # ld64 has no version scripts: the same rule as an export pattern. (Built only on Apple.)
  target_link_options(tcr_shared PRIVATE "LINKER:-exported_symbol,_tcr_*")
else()
  target_link_options(tcr_shared PRIVATE
    "LINKER:--version-script=${PROJECT_SOURCE_DIR}/capi/libtcr.map"
    "LINKER:-z,defs")
endif()
# A C program linking libtcr.so links it with the C driver, which does not add libstdc++: the
# shared library carries that dependency itself.
set_target_properties(tcr_shared PROPERTIES LINKER_LANGUAGE CXX)

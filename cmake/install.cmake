# Install rules: `cmake --install <build> [--prefix P]` puts
#   P/include/tcr/tcr.h                               the C API (capi/tcr.h): #include "tcr.h"
#   P/include/tcr/{runtime,threads,exceptions}/*.h   the public headers (cmake/public-headers.txt);
#                                                     users write #include "threads/thread_manager.h"
#   P/lib/libtcr.a                                    the C and C++ APIs (target tcr, tcr::tcr)
#   P/lib/libtcr.so{,.0,.0.2.0}                       the C API (target tcr_shared, tcr::shared)
#   P/lib/cmake/tcr/tcr{Config,ConfigVersion,Targets}.cmake   for find_package(tcr)
#   P/lib/pkgconfig/tcr.pc                            pkg-config tcr: libtcr.so, from C
#   P/lib/pkgconfig/tcr-static.pc                     pkg-config tcr-static: libtcr.a, C or C++
# tests/install_consumer_test.sh builds a program against an installed tree both ways.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(TCR_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/tcr)
# Must match the tcr target's INSTALL_INTERFACE include dir in the top-level CMakeLists.txt.
set(TCR_INSTALL_INCLUDEDIR include/tcr)

# The public headers use std::expected: whoever includes them needs C++23 too. The build itself
# already compiles with CMAKE_CXX_STANDARD 23; this carries the requirement to tcr's users.
target_compile_features(tcr PUBLIC cxx_std_23)

# Headers: the public ones only (cmake/public-headers.txt), folder kept. The others (ThreadRecord,
# ManagerCore, the OS shim, ...) are internal to their folder and stay out of embedders' builds.
file(STRINGS ${PROJECT_SOURCE_DIR}/cmake/public-headers.txt tcr_public_headers REGEX "^[a-z]")
foreach(header IN LISTS tcr_public_headers)
  get_filename_component(layer ${header} DIRECTORY)
  if(layer STREQUAL "capi")
    set(layer "")  # the C API's header sits at the top: #include "tcr.h"
  endif()
  install(FILES ${PROJECT_SOURCE_DIR}/${header} DESTINATION ${TCR_INSTALL_INCLUDEDIR}/${layer})
endforeach()
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
             ${PROJECT_SOURCE_DIR}/cmake/public-headers.txt)

install(TARGETS tcr tcr_shared EXPORT tcrTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(EXPORT tcrTargets NAMESPACE tcr:: DESTINATION ${TCR_INSTALL_CMAKEDIR})

# find_package(tcr): the config re-finds what tcr::tcr links publicly (Threads, spdlog,
# PkgConfig::BDWGC), then includes tcrTargets.cmake. Relocatable: paths are relative to the config.
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/tcrConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/tcrConfig.cmake
                              INSTALL_DESTINATION ${TCR_INSTALL_CMAKEDIR})
# 0.x: a minor release may break the API, so only the same major.minor is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/tcrConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/tcrConfig.cmake ${PROJECT_BINARY_DIR}/tcrConfigVersion.cmake
        DESTINATION ${TCR_INSTALL_CMAKEDIR})

# tcr.pc names absolute paths, so its prefix is filled in at install time: `cmake --install
# --prefix P` may install elsewhere than the configured CMAKE_INSTALL_PREFIX. Configure time fills
# in everything else and leaves @TCR_PC_PREFIX@ for the install step.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(TCR_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  set(TCR_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
set(TCR_PC_INCLUDEDIR "\${prefix}/include")  # Cflags: -I${includedir}/tcr
set(TCR_PC_PREFIX "@TCR_PC_PREFIX@")
foreach(pc tcr tcr-static)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/${pc}.pc.in @ONLY)
  install(CODE "
    set(TCR_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    configure_file(\"${PROJECT_BINARY_DIR}/${pc}.pc.in\" \"${PROJECT_BINARY_DIR}/${pc}.pc\" @ONLY)
  ")
  install(FILES ${PROJECT_BINARY_DIR}/${pc}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()

// Boehm GC sees what tcr's threads hold: lists reachable only from a thread's own stack or from
// its TCR slots survive collections forced from another thread, and nothing is finalized early.
// A control shows the test can fail: a thread spawned without GC registration loses its list.
#include <gtest/gtest.h>

#define GC_THREADS 1
#define GC_NO_THREAD_REDIRECTS 1
#include <gc/gc.h>

#include <atomic>
#include <vector>

#include "tests/test_support.h"

namespace tcr {
namespace {

struct Node {
  Node* next;
  std::uintptr_t value;
  std::uintptr_t owner;
};

// Finalizations per list owner; the finalizer's client data is the owner's index.
constexpr int kOwners = 512;
std::atomic<long> g_finalized[kOwners];

void count_finalized(void*, void* owner) {
  g_finalized[reinterpret_cast<std::uintptr_t>(owner)].fetch_add(1, std::memory_order_relaxed);
}

long finalized(std::uintptr_t owner) { return g_finalized[owner].load(); }

Node* build_list(std::uintptr_t owner, int length) {
  Node* head = nullptr;
  for (int i = 0; i < length; ++i) {
    Node* n = static_cast<Node*>(GC_MALLOC(sizeof(Node)));
    n->next = head;
    n->value = static_cast<std::uintptr_t>(i);
    n->owner = owner;
    // Unordered: a chain's nodes are all finalized in the cycle that finds them unreachable
    // (ordered finalization would take one cycle per link).
    GC_REGISTER_FINALIZER_NO_ORDER(n, count_finalized, reinterpret_cast<void*>(owner), nullptr,
                                   nullptr);
    head = n;
  }
  return head;
}

bool list_intact(const Node* head, std::uintptr_t owner, int length) {
  int expect = length - 1;
  for (const Node* n = head; n != nullptr; n = n->next, --expect) {
    if (n->owner != owner || n->value != static_cast<std::uintptr_t>(expect)) return false;
  }
  return expect == -1;
}

constexpr int kLength = 2000;
constexpr int kWorkers = 6;

TEST(Boehm, ListsOnStacksInTcrSlotsAndInResultsSurviveCollectionsFromAnotherThread) {
  auto m = test::make_manager();
  std::atomic<bool> stop{false};
  std::atomic<long> collections{0};
  Result<ThreadRef> collector = m->spawn("collector", [&](Tcr&) {
    while (!stop.load()) {
      GC_gcollect();
      collections.fetch_add(1);
    }
    return nullptr;
  });
  ASSERT_TRUE(collector);
  std::atomic<int> intact{0};
  std::vector<ThreadRef> workers;
  for (int w = 0; w < kWorkers; ++w) {
    Result<ThreadRef> t = m->spawn("mutator", [&, w](Tcr& self) -> void* {
      const std::uintptr_t stack_owner = 1 + static_cast<std::uintptr_t>(w);
      const std::uintptr_t slot_owner = 101 + static_cast<std::uintptr_t>(w);
      // One list only on this stack, one only in a TCR slot.
      Node* volatile on_stack = build_list(stack_owner, kLength);
      self.slot(0) = build_list(slot_owner, kLength);
      const long seen = collections.load();
      while (collections.load() < seen + 5) {
        for (int i = 0; i < 100; ++i) (void)GC_MALLOC(64);  // garbage, so collections do work
      }
      if (list_intact(on_stack, stack_owner, kLength) &&
          list_intact(static_cast<Node*>(self.slot(0)), slot_owner, kLength) &&
          finalized(stack_owner) == 0 && finalized(slot_owner) == 0) {
        intact.fetch_add(1);
      }
      self.slot(0) = nullptr;  // now garbage: may be finalized from here on
      // The stack list is returned: only the GC-visible result slot keeps it until join.
      return on_stack;
    });
    ASSERT_TRUE(t) << t.error().message();
    workers.push_back(*t);
  }
  // Let the workers finish (Dead, not joined), then collect some more: their stacks are gone and
  // their result slots are all that holds the returned lists.
  ASSERT_TRUE(test::eventually([&] { return m->stats().live == 1; }));
  const long seen = collections.load();
  ASSERT_TRUE(test::eventually([&] { return collections.load() >= seen + 3; }));
  stop = true;
  ASSERT_TRUE(m->join(*collector));
  EXPECT_EQ(intact.load(), kWorkers);
  for (int w = 0; w < kWorkers; ++w) {
    Result<void*> v = m->join(workers[static_cast<std::size_t>(w)]);
    ASSERT_TRUE(v);
    const std::uintptr_t stack_owner = 1 + static_cast<std::uintptr_t>(w);
    EXPECT_EQ(finalized(stack_owner), 0) << "a returned list was finalized before join";
    EXPECT_TRUE(list_intact(static_cast<Node*>(*v), stack_owner, kLength));
  }
  EXPECT_GE(collections.load(), 5);
}

TEST(Boehm, AThreadNotRegisteredWithTheGcLosesItsStackList) {
  auto m = test::make_manager();
  constexpr std::uintptr_t kOwner = 300;
  // Boehm allows no allocation on an unregistered thread, so a registered one builds the list,
  // hands over its head disguised (the GC cannot see it in the atomic), and exits.
  std::atomic<std::uintptr_t> disguised{0};
  Result<ThreadRef> builder = m->spawn("builder", [&](Tcr&) {
    disguised = ~reinterpret_cast<std::uintptr_t>(build_list(kOwner, kLength));
    return nullptr;
  });
  ASSERT_TRUE(builder);
  ASSERT_TRUE(m->join(*builder));
  SpawnOptions unregistered;
  unregistered.gc = GcRegistration::DontRegister;
  std::atomic<bool> holding{false};
  std::atomic<bool> release{false};
  Result<ThreadRef> t = m->spawn("invisible", [&](Tcr&) -> void* {
    Node* volatile on_stack = reinterpret_cast<Node*>(~disguised.load());
    disguised = 0;
    (void)on_stack;
    holding = true;
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return nullptr;  // never touches the list again: it may be gone
  }, unregistered);
  ASSERT_TRUE(t);
  ASSERT_TRUE(test::eventually([&] { return holding.load(); }));
  for (int i = 0; i < 5; ++i) {
    GC_gcollect();
    GC_invoke_finalizers();
  }
  release = true;
  ASSERT_TRUE(m->join(*t));
  // The collector never saw that stack: the list was finalized while still "in use".
  EXPECT_GT(finalized(kOwner), kLength / 2);
}

}  // namespace
}  // namespace tcr

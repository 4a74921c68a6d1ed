#include <doctest/doctest.h>

#include <vector>

#include "io/timer.h"
#include "util/intrusive_list.h"

using faasvisor::io::Timer;
using faasvisor::io::TimerQueue;

namespace {
struct Recorder {
  std::vector<int> fired;
};
struct Tagged {
  Timer timer;
  int tag = 0;
  Recorder *rec = nullptr;
};
void record(Timer &t) {
  auto &self = t.owner_as<Tagged>();
  self.rec->fired.push_back(self.tag);
}
}  // namespace

TEST_CASE("timers fire in deadline order in virtual time, and only when due") {
  TimerQueue q(nullptr);
  Recorder rec;
  Tagged t[5];
  uint64_t deadlines[5] = {50, 10, 40, 20, 30};
  for (int i = 0; i < 5; ++i) {
    t[i].tag = static_cast<int>(deadlines[i]);
    t[i].rec = &rec;
    t[i].timer.owner = &t[i];
    t[i].timer.callback = &record;
    q.start(t[i].timer, deadlines[i]);
  }
  CHECK(q.next_deadline_ns() == 10);
  q.run_expired(25);
  CHECK(rec.fired == std::vector<int>{10, 20});
  q.run_expired(100);
  CHECK(rec.fired == std::vector<int>{10, 20, 30, 40, 50});
  CHECK(q.size() == 0);
}

TEST_CASE("a stopped timer never fires and a restarted one moves") {
  TimerQueue q(nullptr);
  Recorder rec;
  Tagged a, b;
  for (Tagged *x : {&a, &b}) {
    x->rec = &rec;
    x->timer.owner = x;
    x->timer.callback = &record;
  }
  a.tag = 1;
  b.tag = 2;
  q.start(a.timer, 10);
  q.start(b.timer, 20);
  q.stop(a.timer);
  CHECK(!a.timer.armed());
  q.start(b.timer, 5);  // restart earlier
  q.run_expired(6);
  CHECK(rec.fired == std::vector<int>{2});
  q.run_expired(100);
  CHECK(rec.fired == std::vector<int>{2});
}

TEST_CASE("a timer callback may start another timer that is already due") {
  TimerQueue q(nullptr);
  struct Chain {
    Timer first, second;
    TimerQueue *q = nullptr;
    int fired = 0;
  } c;
  c.q = &q;
  c.first.owner = c.second.owner = &c;
  c.first.callback = [](Timer &t) {
    auto &self = t.owner_as<Chain>();
    ++self.fired;
    self.q->start(self.second, 0);
  };
  c.second.callback = [](Timer &t) { ++t.owner_as<Chain>().fired; };
  q.start(c.first, 1);
  q.run_expired(1);
  CHECK(c.fired == 2);
}

TEST_CASE("a heap of many timers stays ordered under random removal") {
  TimerQueue q(nullptr);
  constexpr int kCount = 1000;
  std::vector<Tagged> timers(kCount);
  Recorder rec;
  uint32_t seed = 12345;
  for (int i = 0; i < kCount; ++i) {
    seed = seed * 1103515245u + 12345u;
    timers[i].tag = static_cast<int>(seed % 100000);
    timers[i].rec = &rec;
    timers[i].timer.owner = &timers[i];
    timers[i].timer.callback = &record;
    q.start(timers[i].timer, static_cast<uint64_t>(timers[i].tag));
  }
  for (int i = 0; i < kCount; i += 3) q.stop(timers[i].timer);
  q.run_expired(UINT64_MAX - 1);
  CHECK(rec.fired.size() == static_cast<size_t>(kCount - (kCount + 2) / 3));
  for (size_t i = 1; i < rec.fired.size(); ++i) CHECK(rec.fired[i - 1] <= rec.fired[i]);
}

namespace {
struct Item {
  int value = 0;
  faasvisor::ListHook a, b;
};
}  // namespace

TEST_CASE("an object can sit on two intrusive lists through two hooks") {
  faasvisor::IntrusiveList<Item, &Item::a> list_a;
  faasvisor::IntrusiveList<Item, &Item::b> list_b;
  Item x, y, z;
  x.value = 1;
  y.value = 2;
  z.value = 3;
  list_a.push_back(x);
  list_a.push_back(y);
  list_a.push_front(z);
  list_b.push_back(y);
  CHECK(list_a.size() == 3);
  CHECK(list_a.front()->value == 3);
  CHECK(list_b.front() == &y);
  list_a.remove(y);
  CHECK(list_b.contains(y));
  CHECK(!list_a.contains(y));
  CHECK(list_a.pop_back()->value == 1);
  CHECK(list_a.pop_front()->value == 3);
  CHECK(list_a.empty());
  list_b.remove(y);
}

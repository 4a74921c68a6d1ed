#include "io/timer.h"

#include <cassert>


namespace faasvisor::io {

Timer::~Timer() { assert(!armed() && "timer destroyed while armed"); }

TimerQueue::TimerQueue(Ring *ring, const Clock &clock) : ring_(ring), clock_(clock) {
  kernel_timeout_.callback = &TimerQueue::on_kernel_timeout;
  kernel_timeout_.owner = this;
}

TimerQueue::~TimerQueue() {
  for (Timer *t : heap_) t->heap_index = Timer::kUnarmed;
  heap_.clear();
}

void TimerQueue::start(Timer &t, uint64_t deadline_ns) {
  assert(t.callback != nullptr);
  if (t.armed()) {
    uint64_t old = t.deadline_ns;
    t.deadline_ns = deadline_ns;
    if (deadline_ns < old) sift_up(t.heap_index);
    else sift_down(t.heap_index);
    return;
  }
  t.deadline_ns = deadline_ns;
  t.heap_index = heap_.size();
  heap_.push_back(&t);
  sift_up(t.heap_index);
}

void TimerQueue::stop(Timer &t) {
  if (!t.armed()) return;
  remove_at(t.heap_index);
}

void TimerQueue::run_expired(uint64_t now_ns) {
  while (!heap_.empty() && heap_[0]->deadline_ns <= now_ns) {
    Timer *t = heap_[0];
    remove_at(0);
    t->callback(*t);  // may free t's owner; t is not touched afterwards
  }
}

void TimerQueue::sync_kernel_timeout() {
  if (ring_ == nullptr || heap_.empty()) return;
  uint64_t next = heap_[0]->deadline_ns;
  if (kernel_timeout_.in_flight && next >= armed_deadline_ns_) return;
  armed_deadline_ns_ = next;
  armed_at_.tv_sec = static_cast<int64_t>(next / 1'000'000'000ull);
  armed_at_.tv_nsec = static_cast<long long>(next % 1'000'000'000ull);
  if (kernel_timeout_.in_flight) ring_->timeout_update(kernel_timeout_, &armed_at_);
  else ring_->timeout_abs(kernel_timeout_, &armed_at_);
}

void TimerQueue::on_kernel_timeout(Completion &c, int /*result*/, uint32_t /*flags*/) {
  // -ETIME (fired), 0, or -ECANCELED: in each case run what is due; the loop re-arms.
  auto &self = c.owner_as<TimerQueue>();
  self.armed_deadline_ns_ = UINT64_MAX;
  self.run_expired(self.clock_.now_ns());
}

void TimerQueue::swap_nodes(size_t a, size_t b) {
  std::swap(heap_[a], heap_[b]);
  heap_[a]->heap_index = a;
  heap_[b]->heap_index = b;
}

void TimerQueue::sift_up(size_t i) {
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (heap_[parent]->deadline_ns <= heap_[i]->deadline_ns) break;
    swap_nodes(i, parent);
    i = parent;
  }
}

void TimerQueue::sift_down(size_t i) {
  for (;;) {
    size_t left = 2 * i + 1, right = left + 1, least = i;
    if (left < heap_.size() && heap_[left]->deadline_ns < heap_[least]->deadline_ns) least = left;
    if (right < heap_.size() && heap_[right]->deadline_ns < heap_[least]->deadline_ns) least = right;
    if (least == i) break;
    swap_nodes(i, least);
    i = least;
  }
}

void TimerQueue::remove_at(size_t i) {
  assert(i < heap_.size());
  Timer *t = heap_[i];
  size_t last = heap_.size() - 1;
  if (i != last) {
    swap_nodes(i, last);
    heap_.pop_back();
    sift_down(i);
    sift_up(i);
  } else {
    heap_.pop_back();
  }
  t->heap_index = Timer::kUnarmed;
}

}  // namespace faasvisor::io

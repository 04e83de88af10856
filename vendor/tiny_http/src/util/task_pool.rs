use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::io::Result as IoResult;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

/// Manages a collection of threads.
///
/// A new thread is created every time all the existing threads are full.
/// Any idle thread will automatically die after a few seconds.
pub struct TaskPool {
    sharing: Arc<Sharing>,
}

struct Sharing {
    // list of the tasks to be done by worker threads
    todo: Mutex<VecDeque<Task>>,

    // condvar that will be notified whenever a task is added to `todo`
    condvar: Condvar,

    // number of total worker threads running
    active_tasks: AtomicUsize,

    // number of idle worker threads
    waiting_tasks: AtomicUsize,
}

/// Minimum number of active threads.
static MIN_THREADS: usize = 4;

struct Registration<'a> {
    nb: &'a AtomicUsize,
}

impl<'a> Registration<'a> {
    fn new(nb: &'a AtomicUsize) -> Registration<'a> {
        nb.fetch_add(1, Ordering::Release);
        Registration { nb }
    }
}

impl<'a> Drop for Registration<'a> {
    fn drop(&mut self) {
        self.nb.fetch_sub(1, Ordering::Release);
    }
}

/// ticketd: the task queue's lock. Nothing that can panic runs while it
/// is held, but a poisoned lock is taken over rather than unwrapped: one
/// unwrap here on the accept thread ended HTTP service for good.
fn lock(todo: &Mutex<VecDeque<Task>>) -> MutexGuard<'_, VecDeque<Task>> {
    todo.lock().unwrap_or_else(PoisonError::into_inner)
}

type Task = Box<dyn FnMut() + Send>;

impl TaskPool {
    pub fn new() -> TaskPool {
        let pool = TaskPool {
            sharing: Arc::new(Sharing {
                todo: Mutex::new(VecDeque::new()),
                condvar: Condvar::new(),
                active_tasks: AtomicUsize::new(0),
                waiting_tasks: AtomicUsize::new(0),
            }),
        };

        for _ in 0..MIN_THREADS {
            // ticketd: a pool without its spare threads still works.
            if let Err(e) = pool.add_thread(None) {
                log::warn!("cannot start an HTTP thread: {}", e);
            }
        }

        pool
    }

    /// Executes a function in a thread.
    /// If no thread is available, spawns a new one.
    ///
    /// ticketd: this spawned with `thread::spawn`, which panics when the
    /// system has no thread (or memory for a stack) to give, and it did
    /// so holding the queue's lock: the lock was poisoned, the next
    /// `unwrap()` of it panicked the accept thread, and HTTP answered
    /// "connection refused" for good. A thread is now started outside
    /// the lock with `thread::Builder`; if that fails, the error is
    /// returned and `code` is dropped (with it, its connection).
    pub fn spawn(&self, code: Task) -> IoResult<()> {
        {
            let mut queue = lock(&self.sharing.todo);

            // ticketd: this checked only for `waiting_tasks == 0`. A waiter
            // that was just notified still counts as waiting until it pops its
            // task, so a second task queued right after the first found no
            // thread to run it; with keep-alive connections (tasks that run
            // for as long as the client stays) it waited for one to end. Idle
            // threads are the waiters minus the tasks already queued for them.
            if self.sharing.waiting_tasks.load(Ordering::Acquire) > queue.len() {
                queue.push_back(code);
                self.sharing.condvar.notify_one();
                return Ok(());
            }
        }
        self.add_thread(Some(code))
    }

    fn add_thread(&self, initial_fn: Option<Task>) -> IoResult<()> {
        let sharing = self.sharing.clone();

        thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                let sharing = sharing;
                let _active_guard = Registration::new(&sharing.active_tasks);

                if let Some(mut f) = initial_fn {
                    f();
                }

                loop {
                    let mut task: Task = {
                        let mut todo = lock(&sharing.todo);

                        let task;
                        loop {
                            if let Some(poped_task) = todo.pop_front() {
                                task = poped_task;
                                break;
                            }
                            let _waiting_guard = Registration::new(&sharing.waiting_tasks);

                            let received =
                                if sharing.active_tasks.load(Ordering::Acquire) <= MIN_THREADS {
                                    todo = sharing
                                        .condvar
                                        .wait(todo)
                                        .unwrap_or_else(PoisonError::into_inner);
                                    true
                                } else {
                                    let (new_lock, waitres) = sharing
                                        .condvar
                                        .wait_timeout(todo, Duration::from_millis(5000))
                                        .unwrap_or_else(PoisonError::into_inner);
                                    todo = new_lock;
                                    !waitres.timed_out()
                                };

                            if !received && todo.is_empty() {
                                return;
                            }
                        }

                        task
                    };

                    task();
                }
            })
            .map(|_| ())
    }
}

impl Drop for TaskPool {
    fn drop(&mut self) {
        self.sharing
            .active_tasks
            .store(999_999_999, Ordering::Release);
        self.sharing.condvar.notify_all();
    }
}
